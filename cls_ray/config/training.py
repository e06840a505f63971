"""Training sections: the PRM, consolidation (SFT sleep, PPO) and the sleep schedule. Each trainer
section is a Ray Train + DeepSpeed job (`TrainerConfig`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cls_ray.config.base import Section


class TrainerConfig(Section):
    """A Ray Train + DeepSpeed job: workers, ZeRO stage, optimisation."""

    steps: int = Field(500, ge=1)
    batch_size: int = Field(16, ge=1, description="Per worker.")
    lr: float = Field(1e-4, gt=0)
    warmup: int = Field(40, ge=0)
    seed: int = 0
    log_every: int = Field(20, ge=1)
    num_workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    threads_per_worker: int = Field(1, ge=1)
    use_gpu: bool = False
    gpus_per_worker: float = Field(
        1.0, gt=0, description="With use_gpu: below 1 shares a GPU with serving replicas."
    )
    zero_stage: Literal[0, 1, 2, 3] = 2
    bf16: bool = False
    fused_adam: bool = Field(
        False,
        description="torch's fused AdamW (one kernel per tensor) instead of its loop: the same "
        "update, 0.012 s against 0.08 s for MiniLM's 22.7M weights on 2 cores.",
    )


class JudgeConfig(Section):
    """An OpenAI-compatible chat endpoint that labels steps (`prm.label_sources: [judge]`)."""

    url: str = Field("", description="Base URL, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field("", description="The model name the endpoint serves.")
    api_key_env: str = Field(
        "CLS_RAY_JUDGE_KEY",
        description="Environment variable holding the key (empty: the endpoint needs none).",
    )
    timeout_s: float = Field(60.0, gt=0, le=600, description="Per request.")
    retries: int = Field(1, ge=0, le=5)
    max_requests: int = Field(2000, ge=1, description="At most this many trajectories judged.")
    concurrency: int = Field(4, ge=1, le=64)


class PRMConfig(TrainerConfig):
    """The process reward model: labels, encoder, Ray Train + DeepSpeed training, use."""

    # 250 steps: on the embedded default the PRM's loss is 0.003 by then and its step F1 0.995
    # (0.996 after 500 steps, which took twice the 8.5 minutes on 2 cores). configs/local.yaml
    # trains 200 steps at 2e-4 on one worker with ZeRO-0 instead (step F1 0.996, 3.5 minutes).
    steps: int = Field(250, ge=1)
    fused_adam: bool = Field(
        True,
        description="torch's fused AdamW: the encoder's 22.7M weights updated in 0.012 s a step "
        "against 0.08 s by its loop on 2 cores, the same update.",
    )

    path: str = Field(
        "", description="A trained PRM folder; empty: the latest under state_dir/prm."
    )
    encoder: str = Field("", description="Encoder checkpoint; empty: the packaged MiniLM.")
    num_layers: int | None = Field(None, ge=1, description="Keep the first N encoder layers.")
    freeze_embeddings: bool = Field(
        False,
        description="Train the encoder without its word embeddings (a third of MiniLM's weights "
        "and of what the workers exchange each step): steps 18% faster with 6 layers, 3x with 1.",
    )
    max_length: int = Field(512, ge=32)
    micro_batches: int = Field(
        1,
        ge=1,
        description="Cut each worker's batch, sorted by length, into this many micro-batches "
        "whose gradients add up to the batch's: the same step with less padding.",
    )
    aggregation: Literal["min", "product", "last", "mean"] = "min"
    # Labels
    label_sources: list[Literal["verifier", "mc", "judge"]] | None = Field(
        None,
        description="verifier (exact, where the task has one), mc (Monte Carlo rollouts against "
        "the reference answers: any task), judge (an OpenAI-compatible endpoint, prm.judge), "
        "or several; null: the verifier where the task has one, else mc.",
    )
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    consensus: bool = Field(False, description="Keep only steps where automatic sources agree.")
    mc_rollouts: int = Field(4, ge=1)
    mc_soft: bool = True
    mc_relative: bool = Field(
        False,
        description="Label a step by the progress it makes (the share of rollouts that reach "
        "the answer after it against before it) instead of the share alone.",
    )
    mc_tolerance: float = Field(
        0.25, ge=0, le=1, description="mc_relative: the drop a right step may show (noise)."
    )
    mc_agree: bool = Field(
        False,
        description="mc_relative: keep a step's label only where the hard absolute label (any "
        "rollout reaches the answer) agrees; the ambiguous steps stay unlabelled.",
    )
    mc_steps: bool = Field(
        False,
        description="mc_relative: count progress in steps too: a step after which the "
        "successful rollouts need no fewer steps (half a step less at least) is a detour, "
        "one after which they need more than 1.5 fewer (mc.LEAP) skipped a hop; both are "
        "wrong, and "
        "every step after a wrong one is wrong (first-error labels); not with "
        "mc_agree, which would unlabel the detours.",
    )
    questions_per_family: int = Field(40, ge=1, description="Training questions per family.")
    samples_per_question: int = Field(2, ge=0)
    corruptions_per_question: int = Field(2, ge=0)
    sample_temperature: float = Field(1.0, gt=0)
    # Evaluation
    eval_per_family: int = Field(10, ge=1)
    eval_samples_per_question: int = Field(2, ge=0)
    best_of_n: list[int] = Field(default_factory=lambda: [1, 4, 16])
    best_of_n_per_family: int = Field(5, ge=1)


class PPOConfig(Section):
    """Phase 1, PPO with step-level rewards (`cls-ray ppo`)."""

    steps: int = Field(60, ge=1)
    lr: float = Field(5e-4, gt=0)
    batch_size: int = Field(8, ge=1, description="Trajectories per worker and update.")
    kl_beta: float = Field(0.05, ge=0, description="Per-token KL penalty to the reference.")
    kl_kind: Literal["k1", "k2", "k3"] = Field(
        "k1", description="k1 as a reward penalty: k3 explodes where the policy drops a token."
    )
    clip: float = Field(0.2, gt=0)
    vf_coef: float = Field(0.5, ge=0)
    lam: float = Field(0.95, ge=0, le=1)
    tis_cap: float = Field(2.0, ge=1, description="Truncated importance weight cap.")
    credit: Literal["sum", "min"] = Field(
        "min", description="min: each step's return is the worst step still ahead (PURE)."
    )
    whiten: Literal["full", "scale", "none"] = Field(
        "scale",
        description="Advantage normalisation: scale keeps each advantage's sign (the reward "
        "offset is the baseline); full also subtracts the batch mean.",
    )
    ptx_coef: float = Field(
        1.0, ge=0, description="Weight of the replay NLL term (PPO-ptx) against forgetting."
    )
    ptx_batch: int = Field(16, ge=1, description="Replayed pairs per worker and update.")
    reward_offset: float = Field(
        0.5, description="Step reward = PRM score minus this, so doubtful steps cost."
    )
    fresh_per_family: int = Field(
        10, ge=0, description="Fresh rollouts per family on replayed questions."
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of rollouts.")


class ScheduleConfig(Section):
    """The sleep scheduler: a coordinator actor next to the serving application."""

    auto: bool = Field(
        False, description="Start consolidation by itself (threshold, timer); admin always can."
    )
    min_sessions: int = Field(64, ge=1, description="Unconsumed sessions that start one.")
    interval_s: float = Field(
        0.0, ge=0, description="Also start one this often when sessions wait (0: no timer)."
    )
    poll_s: float = Field(5.0, gt=0)
    method: Literal["sft", "ppo"] = "sft"
    limit: int = Field(1000, ge=1, description="Sessions one consolidation consumes.")


class ConsolidateConfig(TrainerConfig):
    """Sleep (LoRA SFT on what the PRM trusts, with replay), PPO and their schedule."""

    steps: int = Field(
        150, ge=1, description="A sleep's optimizer steps; with `epochs`, the most it takes."
    )
    # 3 passes: on the embedded default (bootstrap seed 0) a sleep of 352 pairs took 33 steps
    # and lifted the held-back family 0.31 -> 0.55 at a retention cost of 0.006; the constant
    # 150 steps (13.6 passes) lifted it to 0.56 at a cost of 0.035, which the gate refuses.
    epochs: float | None = Field(
        3.0,
        gt=0,
        description="A sleep's schedule follows its data: this many passes over its pairs at "
        "the global batch (batch_size x num_workers), at least `min_steps`, at most `steps`; "
        "null: always `steps`.",
    )
    min_steps: int = Field(20, ge=1, description="With `epochs`: the fewest steps a sleep takes.")
    lr: float = Field(2e-3, gt=0)
    warmup: int = Field(20, ge=0)
    threads: int | None = Field(
        None,
        ge=0,
        description="torch threads of the consolidation job's own process (scoring, measuring, "
        "dreaming; its Train workers keep threads_per_worker); null: as the process starts "
        "(one inside a Ray task, every core by hand); 0: every core of its node.",
    )
    weights: Literal["lora", "full"] = Field(
        "lora",
        description="lora: an adapter (served next to the base); full: every weight trains and "
        "the version is a full checkpoint replicas reload (SFT only).",
    )
    compose: Literal["continue", "base"] = Field(
        "continue",
        description="How sleep after sleep composes: continue: the candidate starts from the "
        "current version (its adapter trained further, one adapter in all; a full checkpoint "
        "trained further); base: a fresh adapter on the base model each sleep, earlier sleeps' "
        "skills kept only through replay.",
    )
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1, description="2 x rank forgets least (see ANCHORS.md).")
    replay_ratio: float = Field(0.75, ge=0, lt=1, description="Share of replayed old data.")
    replay_keep: int = Field(
        512, ge=0, description="Consumed sessions kept (a random sample) for later replay."
    )
    min_r_tau: float = Field(0.5, ge=0, le=1, description="PRM gate on whole trajectories.")
    min_step_score: float = Field(0.5, ge=0, le=1, description="PRM gate on single steps.")
    retention_tolerance: float = Field(
        0.02,
        ge=0,
        le=1,
        description="Largest drop one sleep may cause: of either retention measure, and of any "
        "learned skill, against the current version.",
    )
    # A skill's best is the highest of several noisy measurements of it (on the stream, 400
    # questions put a score within about 0.017), so it sits above the skill's true level; held
    # to the per-sleep tolerance, a long stream's gate ends up refusing every candidate.
    forgetting_tolerance: float = Field(
        0.03,
        ge=0,
        le=1,
        description="Largest fall, over all sleeps, of any learned skill (retention as the base "
        "skill) below its best score under a promoted version: small drops cannot add up past "
        "it (never less than retention_tolerance). Each sleep's own drop is bounded by "
        "retention_tolerance.",
    )
    # 2048: on 256 episodes (before) a twin candidate of the skill stream lost 0.023 and was
    # refused; on 2048 other episodes it had lost 0.0004. Two versions disagree on a few percent
    # of next steps either way, so a small suite's net change is noise the size of the
    # tolerance. 2048 episodes take 15 s on 2 cores, 256 took 2 s.
    retention_episodes: int = Field(
        2048,
        ge=1,
        description="Where the task has episodes (the world): next-step episodes of the skills "
        "the model was built on, frozen, measured before and after each sleep (step-level "
        "retention).",
    )
    retention_suite: int = Field(
        256,
        ge=0,
        description="Trusted steps of promoted sleeps kept, frozen, as step-level retention "
        "evidence on tasks without episodes (0: none).",
    )
    max_length: int | None = Field(
        None,
        ge=16,
        description="SFT/PPO: tokens per example at most; null: the model's "
        "context length (max_position_embeddings).",
    )
    balance_up_to: int = Field(
        1,
        ge=1,
        description="A sleep's new pairs of each group are repeated towards the largest "
        "group's count, each at most this many times (1: as they come).",
    )
    # Measured on the embedded default (bootstrap seed 0, 100 sessions of the held-back family):
    # no dreams 0.31 -> 0.55; 3 rounds of 16, answers checked, 0.31 -> 0.88 at a retention
    # cost of 0.003 (46, 12 and 0 questions solved by rounds 1-3). Without the reference check
    # the PRM passes chains in the wrong order and the lift stays at 0.60.
    dream_rounds: int = Field(
        3,
        ge=0,
        description="SFT sleeps: rounds in which the candidate asks the sessions' questions again "
        "(best of `dream_n` by the PRM, gated like sessions) and the next candidate trains on "
        "sessions and dreams (expert iteration); 0: none.",
    )
    dream_n: int = Field(16, ge=1, description="Samples per question in a dream.")
    dream_further: bool = Field(
        True,
        description="With a reference check and grounded decoding: a question whose dream the "
        "reference refutes is asked once more with one step more before any answer.",
    )
    reference_gate: bool = Field(
        True,
        description="Where the task's train split answers a session's question, a session whose "
        "answer that reference refutes is not trained on or replayed (PPO rewards its answer as "
        "wrong), however the PRM scored it. Off where the references are incomplete (right "
        "answers the check cannot match): the PRM alone judges sessions; dreams still check.",
    )
    dream_backtrack: int = Field(
        3,
        ge=0,
        description="With a reference check and grounded decoding: a question whose dream the "
        "reference refutes is asked again from before the first step the PRM scores below "
        "min_step_score, that step withheld there; up to this many times (0: never).",
    )
    dream_until: float | None = Field(
        None,
        ge=0,
        le=1,
        description="A dream asks again the questions none of whose trajectories reached this "
        "R(τ) (null: min_r_tau, what the gate trusts).",
    )
    dream_questions: int = Field(
        256, ge=1, description="A dream asks at most this many of the sessions' questions."
    )
    call_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Each call a sleep makes to the serving application (the retriever's "
        "batches, the buffer actor), at most; beyond, the sleep fails and its lease runs out.",
    )
    new_per_family: int = Field(20, ge=1, description="bench: sessions per new family.")
    sample_n: int = Field(16, ge=1, description="bench: best-of-N samples per session.")
    eval_per_family: int = Field(20, ge=1)
    corrupted_share: float = Field(
        0.3, ge=0, lt=1, description="bench ablation: share of sessions with wrong steps."
    )
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
