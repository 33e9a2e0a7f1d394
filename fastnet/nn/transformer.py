"""Attention layers: LayerNorm, Embedding, MultiheadAttention, TransformerEncoder(Layer)."""
__all__: list[str] = []
