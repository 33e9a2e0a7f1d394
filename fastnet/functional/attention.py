"""Attention ops: kernel softmax with masks, layer norm, embedding, scaled dot-product attention."""
__all__: list[str] = []
