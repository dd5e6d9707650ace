"""Built-in frameworks: importing this package registers each one (see librobot_models.registry).

One module per framework holds its config (a registered VLAConfig) and its nn.Module, which
implements the two-method contract:
    compute_loss(batch) -> (loss: scalar Tensor, logs: dict[str, float])
    sample_actions(obs) -> Tensor (B, chunk_size, action_dim)
Parameters of a pretrained or vision part live under the attribute `backbone` so the trainer can
give them their own learning rate.
"""

from librobot_models.frameworks.act import ACT, ACTConfig

__all__ = ["ACT", "ACTConfig"]
