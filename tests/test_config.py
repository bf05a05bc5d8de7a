import pytest
from pydantic import ValidationError

from codedyn.config import CodedynConfig, ConfigError, DatasetConfig, load_config


def test_default_preset_loads_with_documented_splits():
    config = load_config("default")
    # HumanEval pairs on the plain toy suite; the model organism is its own preset until its task is learned.
    assert config.dataset.source == "humaneval" and not config.toy.planted.enabled
    organism = load_config("organism")
    assert organism.dataset.source == "planted" and organism.toy.planted.enabled and not organism.toy.planted.null
    assert load_config("null").toy.planted.null
    assert (config.dataset.splits.analysis, config.dataset.splits.tuning, config.dataset.splits.validation) == (
        0.5, 0.1, 0.4,
    )


def test_overrides_apply_and_none_is_ignored():
    config = load_config("default", {"dataset": {"seed": 7, "limit_problems": None, "sandbox": {"workers": 1}}})
    assert config.dataset.seed == 7
    assert config.dataset.limit_problems is None
    assert config.dataset.sandbox.workers == 1


def test_unknown_key_is_rejected_with_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset:\n  sede: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*dataset.sede"):
        load_config(str(bad))


def test_config_is_frozen():
    config = load_config("default")
    with pytest.raises(ValidationError):
        config.dataset.seed = 5  # type: ignore[misc]


def test_invalid_values_are_rejected():
    with pytest.raises(ValueError, match="sum to 1"):
        DatasetConfig(splits={"analysis": 0.5, "tuning": 0.5, "validation": 0.5})
    with pytest.raises(ValueError, match="unknown mutation operator"):
        DatasetConfig(operators=("swap_everything",))
    with pytest.raises(ValueError, match="problems_path"):
        DatasetConfig(source="jsonl")


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ConfigError, match="default"):
        load_config("no-such-preset")


def test_every_field_is_documented():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no docstring"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, CodedynConfig.__mro__[1]):
                walk(annotation)

    walk(CodedynConfig)


@pytest.mark.parametrize("size", ["14m", "70m", "160m"])
def test_pythia_presets_are_valid_and_scale_the_step_size(size):
    from codedyn.models.suite import pythia_suite

    config = load_config(f"pythia-{size}")
    assert config.suite.name == f"pythia-{size}"
    pythia_suite(size).validate_steps(config.suite.steps)
    assert (config.sampling.localization, config.sampling.n_beta, config.sampling.batch_size) == (300, 30, 32)
    assert config.sampling.lr == {"14m": 1e-3, "70m": 3e-4, "160m": 1e-4}[size]


def test_toy_config_rejects_spans_that_do_not_fit():
    from codedyn.config import ToySuiteConfig

    with pytest.raises(ValidationError, match="fit in the context"):
        ToySuiteConfig(context=16, span_max=16, copies=2)


def test_updated_copies_are_validated_like_a_preset():
    from codedyn.config import SamplingConfig, updated
    from codedyn.sampling.refined import refined_sampling
    from codedyn.sampling.restricted import restricted_sampling

    config = load_config("default")
    copy = updated(config, {"sampling": {"draws": 7}, "executor": {"kind": "ray"}})
    assert copy.sampling.draws == 7 and copy.executor.kind == "ray" and copy.sampling.lr == config.sampling.lr
    assert copy.sampling.corpus is None and copy == load_config("default", {"sampling": {"draws": 7},
                                                                            "executor": {"kind": "ray"}})
    sampling = SamplingConfig()
    assert restricted_sampling(sampling, 2, None, 5) == SamplingConfig(chains=2, burn_in=5)
    assert refined_sampling(sampling, None, 3, None, 1e-4) == SamplingConfig(draws=3, lr=1e-4)
    with pytest.raises(ConfigError, match=r"SamplingConfig.*chains"):
        restricted_sampling(sampling, 0, None, None)  # model_copy(update=...) would have returned chains=0
    with pytest.raises(ConfigError, match=r"SamplingConfig.*lr"):
        refined_sampling(sampling, None, None, None, -1.0)
    with pytest.raises(ConfigError, match=r"executor.kind"):
        updated(config, {"executor": {"kind": "slurm"}})
    with pytest.raises(ConfigError, match=r"sampling.drawz"):
        updated(config, {"sampling": {"drawz": 3}})
