"""Publication: registries (local folder, Hugging Face Hub), the model card and the compare-and-swap publish."""
