"""Models: ECG encoders (``encoders/``), projectors and the fusion model around a frozen LLM."""
