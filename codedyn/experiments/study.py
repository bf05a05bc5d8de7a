"""What every experiment needs before it starts: the dataset, the checkpoint suite and the steps to visit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codedyn.config import CodedynConfig
from codedyn.progress import SILENT, Progress
from codedyn.runs.store import MANIFEST, manifest, write_json

if TYPE_CHECKING:  # annotations only: the dataset module alone takes half a second to import (prepare_study loads it)
    from codedyn.data.pairs import CodeDataset
    from codedyn.models.suite import CheckpointSuite


@dataclass(frozen=True)
class Study:
    """One study's inputs, checked and built: its configuration, run folder, dataset, suite and checkpoints."""

    config: CodedynConfig
    run_dir: Path
    dataset: CodeDataset
    suite: CheckpointSuite
    steps: tuple[int, ...]
    suite_record: dict[str, Any] | None  # the toy suite's training log (induction formation), None for Pythia

    def output_dir(self, name: str) -> Path:
        """``<run>/<name>/``, created: where one experiment writes its tables and figures."""
        folder = self.run_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def readout_samples(self):
        """The dataset samples every posterior of this study reads out (see sampling.posterior)."""
        from codedyn.sampling.posterior import readout_samples

        return readout_samples(self.dataset, self.config.sampling)

    def posteriors(self):
        """``(step, traces)`` for every checkpoint, from the stored posterior units (never samples)."""
        from codedyn.experiments.posteriors import posterior_folder
        from codedyn.sampling.traces import load_traces

        for step in self.steps:
            yield step, load_traces(posterior_folder(self, step))


def check_inputs(config: CodedynConfig):
    """Every check of a study's inputs that needs no expensive work, made before any of it starts: the suite
    exists, every requested step is one of its checkpoints and (for a downloaded series) in the local cache, of an
    architecture codedyn can hook, the problems file and the user corpora read. Returns ``(suite, steps)``; raises
    the one-sentence user errors."""
    from codedyn.data.corpus import check_corpus
    from codedyn.data.pairs import check_dataset_inputs
    from codedyn.models.suite import suite_from_config

    suite = suite_from_config(config.suite, config.toy)
    steps = suite.check_available(config.suite.steps)
    check_dataset_inputs(config.dataset)
    for corpus, splits, role in ((config.sampling.corpus, ("train",), "sampling"),
                                 (config.emergence.corpus, ("train", "heldout"), "SAE"),
                                 (config.emergence.general_corpus, ("all",), "general-text")):
        if corpus is not None:
            check_corpus(corpus, splits, role)
    return suite, steps


def prepare_study(config: CodedynConfig, run_dir: Path, progress: Progress = SILENT) -> Study:
    """Check the inputs, build (or reuse) the dataset and the suite, write the run manifest."""
    import json

    from codedyn.data.pairs import build_dataset, load_dataset
    from codedyn.models.toy import train_toy_suite
    from codedyn.runs.layout import SUITE_FILE

    suite, steps = check_inputs(config)
    dataset = load_dataset(build_dataset(config.dataset, progress=progress))
    record = None
    if config.suite.name == "toy":
        trained = train_toy_suite(config.toy, progress=progress)
        suite = trained.suite
        record = json.loads((trained.folder / SUITE_FILE).read_text())
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        run_dir / MANIFEST,
        manifest(config.model_dump(mode="json"), data_hash=dataset.card["hash"], suite=suite.name,
                 steps=list(steps), seeds={"dataset": config.dataset.seed, "toy": config.toy.seed,
                                           "sampling": config.sampling.seed}),
    )
    return Study(config, run_dir, dataset, suite, steps, record)
