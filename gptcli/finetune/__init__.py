"""Fine-tuning: data (detect, validate, tokenize, mask, pack), recipe (setup/train/save), report."""
