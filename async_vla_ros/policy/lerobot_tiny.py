"""A tiny SmolVLA built offline with random weights (tests, benchmarks, the docs' examples).

No hub access: the VLM config and its tokenizer are written into a local folder (a word-level
tokenizer trained with the ``tokenizers`` library on a few task phrases, the SmolVLM special
tokens SmolVLA needs), then a :class:`SmolVLAPolicy` is built on it with ``load_vlm_weights=False``
and saved with its pre/post-processors, like any LeRobot policy folder. Sizes follow
``../shared/LEROBOT.md`` (width 64, 2 layers): seconds to build, milliseconds per chunk.

Constraints SmolVLA puts on such a model: the tokenizer defines ``fake_image_token`` and
``global_image_token``; the vision ``image_size`` equals ``resize_imgs_with_padding``;
``image_size / patch_size`` is divisible by ``scale_factor``; the VLM layer count is a multiple of
``num_expert_layers``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from async_vla_ros import names as N
from async_vla_ros.hfenv import apply_hf_offline

__all__ = ["TinySmolVLASpec", "build_tiny_vlm", "build_tiny_smolvla", "INSTRUCTIONS"]

INSTRUCTIONS = (
    "track the moving target with the gripper",
    "intercept the moving target",
    "reach the target that will appear",
    "pick up the moving cube",
    "pick up the red cube",
)
_SPECIAL = {
    "fake_image_token": "<fake_token_around_image>",
    "image_token": "<image>",
    "end_of_utterance_token": "<end_of_utterance>",
    "global_image_token": "<global-img>",
    "video_token": "<video>",
}


@dataclass(frozen=True)
class TinySmolVLASpec:
    """What to build: cameras (our name -> LeRobot key), sizes, chunk, steps."""

    cameras: Mapping[str, str] = field(
        default_factory=lambda: {"front": "observation.images.front", "wrist": "observation.images.wrist"}
    )
    image_hw: tuple[int, int] = (64, 64)
    state_dim: int = 8
    action_dim: int = 8
    chunk: int = 10
    n_steps: int = 10
    width: int = 64  # VLM hidden size
    patches: int = 4  # vision patches per image side (patch size = image size / patches)
    vision_width: int = 32  # vision encoder hidden size
    # LeRobot pads the state and the action to max_state_dim / max_action_dim (32, for pretrained
    # weights shared across robots) and its flow loss averages over the padding too; 0: no padding
    # (the state and action sizes themselves), for a model trained from scratch on one robot
    pad_dims: int = 32
    expert_width: float = 0.75  # the action expert's hidden size over the VLM's (expert_width_multiplier)
    seed: int = 0
    rtc_beta: float | None = None  # set: the saved config carries an RTCConfig with this max guidance weight
    state_names: Sequence[str] | None = None
    action_names: Sequence[str] | None = None
    instruction: str = INSTRUCTIONS[0]
    task: str = ""
    proprio_only: bool = False  # the state is q, qd, gripper (names.N_PROPRIO), the head of any task's state


def build_tiny_vlm(
    directory: str | Path, image_size: int = 64, width: int = 64, patches: int = 4, vision_width: int = 32
) -> Path:
    """Write a tiny SmolVLM config + processor (tokenizer included) into ``directory``."""
    if image_size % patches or patches % 2:
        raise ValueError(f"{patches} patches per side must divide the image size {image_size} and be even")
    apply_hf_offline()
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, SmolVLMConfig, SmolVLMImageProcessor, SmolVLMProcessor
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    directory = Path(directory)
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(
        vocab_size=512, special_tokens=["<pad>", "<unk>", "<bos>", "<eos>", *_SPECIAL.values()]
    )
    phrases = [p for table in (N.INSTRUCTIONS, N.HELD_OUT) for task in table.values() for p in task]
    tok.train_from_iterator([*INSTRUCTIONS, *phrases, " ".join(map(str, range(64)))], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        extra_special_tokens=dict(_SPECIAL),
    )
    edge = {"longest_edge": image_size}
    SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(do_image_splitting=False, size=edge, max_image_size=edge),
        tokenizer=fast,
        video_processor=SmolVLMVideoProcessor(size=edge, max_image_size=edge),
        image_seq_len=4,
    ).save_pretrained(directory)
    SmolVLMConfig(
        text_config=dict(
            model_type="llama",
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=width // 4,
            vocab_size=len(fast),
            max_position_embeddings=512,
            pad_token_id=fast.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=vision_width,
            intermediate_size=2 * vision_width,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=image_size // patches,
        ),
        scale_factor=2,
        image_token_id=fast.convert_tokens_to_ids("<image>"),
        vocab_size=len(fast),
    ).save_pretrained(directory)
    return directory


def build_tiny_smolvla(directory: str | Path, spec: TinySmolVLASpec | None = None, stats: Any = None) -> Path:
    """Build and save a tiny random SmolVLA policy folder (VLM files in ``directory/vlm``).

    ``stats``: LeRobot dataset stats for the normaliser (default: mean 0 / std 1 for state and
    action). Writes our sidecar (``async_vla_ros.json``: names, cameras, instruction) when the
    spec names them. Returns the policy folder.
    """
    apply_hf_offline()
    import torch
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.rtc.configuration_rtc import RTCConfig
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    spec = spec or TinySmolVLASpec()
    if spec.pad_dims and spec.pad_dims < max(spec.state_dim, spec.action_dim):
        raise ValueError(f"pad_dims {spec.pad_dims} is below the state / action size; 0 pads nothing")
    directory = Path(directory)
    h, w = spec.image_hw
    if h != w:
        raise ValueError("the tiny VLM takes square images")
    vlm = build_tiny_vlm(
        directory / "vlm", image_size=h, width=spec.width, patches=spec.patches, vision_width=spec.vision_width
    )
    cfg = SmolVLAConfig(
        device="cpu",
        input_features={
            **{key: PolicyFeature(FeatureType.VISUAL, (3, h, w)) for key in spec.cameras.values()},
            "observation.state": PolicyFeature(FeatureType.STATE, (spec.state_dim,)),
        },
        output_features={"action": PolicyFeature(FeatureType.ACTION, (spec.action_dim,))},
        vlm_model_name=str(vlm.resolve()),
        load_vlm_weights=False,
        num_vlm_layers=2,
        self_attn_every_n_layers=2,
        expert_width_multiplier=spec.expert_width,
        max_state_dim=spec.pad_dims or spec.state_dim,
        max_action_dim=spec.pad_dims or spec.action_dim,
        resize_imgs_with_padding=(h, w),
        chunk_size=spec.chunk,
        n_action_steps=spec.chunk,
        num_steps=spec.n_steps,
        tokenizer_max_length=16,
        rtc_config=None if spec.rtc_beta is None else RTCConfig(enabled=True, max_guidance_weight=spec.rtc_beta),
    )
    g = torch.random.get_rng_state()
    torch.manual_seed(spec.seed)
    try:
        policy = SmolVLAPolicy(cfg).eval()
    finally:
        torch.random.set_rng_state(g)
    if stats is None:
        stats = {
            "observation.state": {"mean": torch.zeros(spec.state_dim), "std": torch.ones(spec.state_dim)},
            "action": {"mean": torch.zeros(spec.action_dim), "std": torch.ones(spec.action_dim)},
        }
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    policy.save_pretrained(directory)
    pre.save_pretrained(directory)
    post.save_pretrained(directory)
    side = {"cameras": dict(spec.cameras), "instruction": spec.instruction}
    if spec.state_names is not None:
        side["state_names"] = list(spec.state_names)
    if spec.action_names is not None:
        side["action_names"] = list(spec.action_names)
    if spec.task:
        side["task"] = spec.task
    if spec.proprio_only:
        side["state_input"] = "proprioception"
    (directory / "async_vla_ros.json").write_text(json.dumps(side, indent=1))
    return directory
