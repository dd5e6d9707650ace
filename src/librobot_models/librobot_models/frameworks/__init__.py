"""Built-in frameworks: importing this package registers each one (see librobot_models.registry).

One module per framework holds its config (a registered VLAConfig) and its nn.Module, which
implements the two-method contract:
    compute_loss(batch) -> (loss: scalar Tensor, logs: dict[str, float])
    sample_actions(obs) -> Tensor (B, chunk_size, action_dim)
Parameters of a pretrained or vision part live under the attribute `backbone` so the trainer can
give them their own learning rate. What several frameworks share is in `common` (nested head
configs, the VLM fields, building and running the VLM); `custom` is the template for a new one.

    act      ACT: CVAE + transformer, action chunks (Zhao et al. 2023)
    groot    GR00T N1: frozen VLM (a middle layer) + flow-matching DiT with cross-attention
    pi0      pi0: VLM prefix + flow-matching action expert over [state, noisy actions]
    octo     Octo: block-causal transformer over task / observation history / readout tokens + DDPM
    openvla  OpenVLA-OFT: VLM (LoRA) + parallel decoding of the chunk, L1
    rt2      RT-2: VLM + autoregressive 256-bin action tokens, greedy decoding
    helix    Helix: slow VLM latent (System 2) + fast visuomotor policy (System 1)
    custom   template: conv encoder + state MLP + any registered head
"""

from librobot_models.frameworks.act import ACT, ACTConfig
from librobot_models.frameworks.custom import Custom, CustomConfig
from librobot_models.frameworks.groot import GR00T, GR00TConfig
from librobot_models.frameworks.helix import Helix, HelixConfig
from librobot_models.frameworks.octo import Octo, OctoConfig
from librobot_models.frameworks.openvla import OpenVLA, OpenVLAConfig
from librobot_models.frameworks.pi0 import Pi0, Pi0Config
from librobot_models.frameworks.rt2 import RT2, RT2Config

__all__ = [
    "ACT",
    "GR00T",
    "RT2",
    "ACTConfig",
    "Custom",
    "CustomConfig",
    "GR00TConfig",
    "Helix",
    "HelixConfig",
    "Octo",
    "OctoConfig",
    "OpenVLA",
    "OpenVLAConfig",
    "Pi0",
    "Pi0Config",
    "RT2Config",
]
