"""Contrastive pretraining (losses, augmentations, Lightning training) and embedding export."""
