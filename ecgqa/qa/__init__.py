"""ECG-QA data: question shards, ecg_id -> record resolution, signal cache, episodes."""
