"""The image path: ECGs rendered on paper, instruction data, LoRA fine-tuning of an image LLM."""
