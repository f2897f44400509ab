"""torch side: flow-matching chunk policies, samplers, LoRA, the A2C2 head, policy backends.

Public entry points (see docs/architecture.md):

* :mod:`.samplers`: ``sample_vanilla``, ``sample_rtc``, ``sample_prefix``, ``sample_bid``
  (flow time tau = 0 noise, tau = 1 data; the model is any callable ``v(x, tau)``),
* :mod:`.networks`: ``FlowNetConfig``, ``FlowMixerNet`` (``encode`` once per chunk, then
  ``velocity`` per Euler step), ``flow_matching_loss``,
* :mod:`.base`: ``ChunkPolicy`` protocol, ``FlowPolicyBackend``, ``SamplerSettings``,
  ``save_checkpoint`` / ``load_policy``, backend registry,
* :mod:`.normalize`: ``Normalizer`` (per-dimension stats of observations and actions),
* :mod:`.lora`: ``apply_lora``, ``adapters_disabled``, ``merge_lora``,
* :mod:`.a2c2`: ``CorrectionHead``, ``CorrectionConfig``.
"""
