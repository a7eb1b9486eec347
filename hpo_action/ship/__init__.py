"""Publication: registries (local folder, Hugging Face Hub), the gate's manifest, signatures and attestations, the
model card, the compare-and-swap publish, and the verification of a version before it is trusted."""
