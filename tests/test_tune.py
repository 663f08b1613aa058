"""`sendit tune`: search spaces, validation-only search, pruning, failed trials, resume, workers, the preset."""

from __future__ import annotations

import json
import time

import numpy as np
import optuna
import pandas as pd
import pytest
from helpers import OPT_TOKENIZER, paths_atol

from sendit.run.folder import TRIALS
from sendit.train import engine
from sendit.recipes.tune import trials as tune_trials
from sendit.cli import main
from sendit.errors import ConfigError, TrainingError
from sendit.config.schema import resolve_config_path
from sendit.methods import METHODS, get_method
from sendit.run.folder import read_manifest
from sendit.report import build_report
from sendit.report.load import RunData
from sendit.report.recommend import busy_notes
from sendit.recipes.tune.search import tune
from sendit.config.tune import load_tune_config
from sendit.recipes.tune.trials import TRIAL_COLUMNS, apply_params, default_params, method_space

pytestmark = pytest.mark.usefixtures("one_thread")
QUIET = dict(log=lambda s: None)


def _cfg(model, out, methods="head", seeds=(0,), **tune_settings):
    overrides = dict(model=str(model), methods=methods, train_size=64, val_size=24, test_size=40, epochs=2,
                     batch_size=16, out=str(out), threads=1, seeds=list(seeds))
    return load_tune_config(None, overrides, {"trials": 3, **tune_settings})


def _trials(run_dir):
    return pd.read_csv(run_dir / TRIALS)


# ------------------------------------------------------------------------------------------------ spaces
@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_declares_a_search_space_that_yields_valid_configs(name):
    method = get_method(name)
    space = method_space(name)
    lr = space["lr"]
    assert lr["log"] and lr["low"] <= method.default_lr <= lr["high"]
    if name in ("lora", "dora"):
        assert {"lora_r", "lora_alpha", "lora_dropout", "target_modules"} <= set(space)
    if name == "full":
        assert {"warmup_ratio", "weight_decay"} <= set(space)
    cfg, _ = load_tune_config(None, {"methods": name}, {})
    for corner in ("low", "high"):  # every corner of the space is a config the run would accept
        params = {k: s["choices"][-1 if corner == "high" else 0] if "choices" in s else s[corner]
                  for k, s in space.items()}
        tuned = apply_params(cfg, name, params)
        assert tuned.method.method_lr[name] == pytest.approx(params["lr"])
    assert default_params(cfg, name, space)["lr"] == method.default_lr


def test_config_overrides_a_method_space_and_target_modules_reach_peft():
    space = method_space("lora", {"lora_r": {"choices": [2]}, "lora_dropout": None, "lr": {"low": "1e-4",
                                                                                              "high": 1e-3}})
    assert space["lora_r"] == {"choices": [2]} and "lora_dropout" not in space and "lora_alpha" in space
    cfg, _ = load_tune_config(None, {"methods": "lora"}, {})
    assert apply_params(cfg, "lora", {"target_modules": "attention"}).method.target_modules is None
    assert apply_params(cfg, "lora", {"target_modules": "all-linear"}).method.target_modules == ["all-linear"]
    with pytest.raises(ConfigError, match="neither lr nor"):
        method_space("lora", {"lora_rank": {"choices": [4]}})
    with pytest.raises(ConfigError, match="low <= high"):
        method_space("head", {"lr": {"low": 1e-2, "high": 1e-3, "log": True}})


def test_shipped_tune_preset_loads_and_a_bad_tune_key_is_one_paragraph(tmp_path, capsys):
    cfg, tcfg = load_tune_config(resolve_config_path("tune-quick"), {}, {})
    for name in cfg.method.methods:
        method_space(name, tcfg.space.get(name))
    assert len(cfg.seed_list()) >= 2 and tcfg.trials >= 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("tune:\n  trails: 4\n")
    assert main(["tune", "--config", str(bad), "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'tune.trails'" in err and "Did you mean 'trials'" in err and "Traceback" not in err
    assert not (tmp_path / "never").exists()
    space = "{lora: {lora_dropout: {low: 0.5, high: 1.5}}}"
    assert main(["tune", "--methods", "lora", "--space", space, "--out", str(tmp_path / "never")]) == 2
    assert "tune.space.lora.lora_dropout: the value 1.5 is not a valid setting" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


# ------------------------------------------------------------------------------------------------ sweeps
def test_search_reads_validation_only_then_confirms_every_seed(tiny_opt, tmp_path, monkeypatch):
    seen, phase = [], {"now": "search"}
    real_predict, real_confirm = engine.predict, __import__("sendit.recipes.tune.search", fromlist=["confirm"]).confirm

    def spy_predict(model, data, *a, **kw):
        seen.append((phase["now"], len(data)))
        return real_predict(model, data, *a, **kw)

    def spy_confirm(*a, **kw):
        phase["now"] = "confirm"
        return real_confirm(*a, **kw)

    monkeypatch.setattr(engine, "predict", spy_predict)
    monkeypatch.setattr("sendit.run.method.predict", spy_predict)
    monkeypatch.setattr("sendit.recipes.tune.search.confirm", spy_confirm)
    trial_seeds, real_fit = [], tune_trials.fit
    monkeypatch.setattr(tune_trials, "fit", lambda *a, **kw: trial_seeds.append(a[6]) or real_fit(*a, **kw))
    cfg, tcfg = _cfg(tiny_opt, tmp_path / "run", methods="bitfit,lora", seeds=(0, 1))
    run_dir = tune(cfg, tcfg, report=False, **QUIET)
    assert set(trial_seeds) == {2}, "search trials train with a seed apart from the confirmation seeds 0 and 1"

    searched = [n for p, n in seen if p == "search"]
    assert searched and set(searched) == {24}, "the search must predict the 24 validation rows and nothing else"
    assert {40, 359} <= {n for p, n in seen if p == "confirm"}  # the test sets, only once the search is over
    trials = _trials(run_dir)
    assert trials.columns.tolist() == TRIAL_COLUMNS
    assert len(trials) == 6 and set(trials["state"]) == {"complete"}
    assert trials.groupby("method")["trial"].apply(sorted).map(list).tolist() == [[0, 1, 2], [0, 1, 2]]
    first = trials[trials["trial"] == 0].set_index("method")["lr"]
    assert first["bitfit"] == get_method("bitfit").default_lr and first["lora"] == get_method("lora").default_lr
    per_epoch = json.loads(trials["val_f1_by_epoch"].iloc[0])
    assert len(per_epoch) == 2 and trials["best_val_f1"].iloc[0] == pytest.approx(max(per_epoch), abs=1e-6)
    assert (trials["peak_memory_mb"] > 0).all() and (trials["time_sec"] > 0).all()

    tuned = read_manifest(run_dir)["tuned"]
    for name in ("bitfit", "lora"):
        rows = trials[trials["method"] == name]
        best = rows.loc[rows["objective"].idxmax()]
        assert tuned[name]["trial"] == best["trial"]
        results = pd.read_csv(run_dir / f"{name}_results.csv")
        assert sorted(results["seed"]) == [0, 1]
        assert results["lr"].tolist() == pytest.approx([best["lr"]] * 2)
        assert (run_dir / name).is_dir() and (run_dir / f"{name}-seed1").is_dir()
        metrics = pd.read_csv(run_dir / f"{name}_inference_metrics_summary.csv")
        assert len(metrics) == 4  # two test sets x two seeds

    out = build_report([run_dir], n_boot=100, dpi=40)  # `sendit report` reads the sweep like any run
    summary = json.loads((out / "stats.json").read_text())
    assert summary["recommendation"].startswith("Across 2 seeds: Use ") and len(summary["seed_pairs"]) == 2
    assert "margin δ = 1 accuracy points" in summary["recommendation"]
    html = (out / "index.html").read_text()
    assert "Holm-corrected" in html and "crossed random effects" in html  # the report says how it tested
    assert html.rindex("<section") == html.index('<section id="recommendation">'), "the report ends with it"
    assert (out / "tables" / "expected_best_of_n.csv").is_file() and (out / "tables" / "pareto.csv").is_file()


def _scripted_validation(monkeypatch, scores):
    """Validation F1 in call order (then the last value): the pruner's input, made deterministic."""
    calls = []
    real = engine.evaluate_loss

    def scripted(*a, **kw):
        out = real(*a, **kw)
        out["f1"] = scores[min(len(calls), len(scores) - 1)]
        calls.append(out["f1"])
        return out

    monkeypatch.setattr(engine, "evaluate_loss", scripted)


@pytest.mark.parametrize("pruner, pruned", [("median", [1, 2]), ("none", [])])
def test_trials_below_the_median_are_pruned_after_one_epoch(tiny_opt, tmp_path, monkeypatch, pruner, pruned):
    _scripted_validation(monkeypatch, [0.9, 0.9, 0.1])
    cfg, tcfg = _cfg(tiny_opt, tmp_path / "run", pruner=pruner, prune_after_trials=1)
    trials = _trials(tune(cfg, tcfg, report=False, **QUIET)).set_index("trial")
    assert trials.index[trials["state"] == "pruned"].tolist() == pruned
    assert trials.loc[pruned, "epochs_run"].tolist() == [1] * len(pruned)
    assert trials.loc[0, "state"] == "complete" and trials.loc[0, "epochs_run"] == 2


def test_the_time_cap_never_leaves_a_method_without_its_first_finished_trial(tiny_opt, tmp_path):
    """A cap far below one epoch (a slow method on a busy machine): the first trial still finishes, so the method
    has a configuration to confirm; the cap then ends the search."""
    cfg, tcfg = _cfg(tiny_opt, tmp_path / "run", time_cap_minutes=1e-5)
    run_dir = tune(cfg, tcfg, report=False, **QUIET)
    trials = _trials(run_dir).set_index("trial")
    assert trials["state"].tolist() == ["complete"] and trials.loc[0, "epochs_run"] == 2
    manifest = read_manifest(run_dir)
    assert manifest["status"] == {"head/seed0": "done"}
    assert manifest["tuned"]["head"]["cut_short"] == "time cap after 1 of 3 trials", "the cap is reported"
    text = build_report([run_dir], n_boot=20, dpi=30)
    rec = json.loads((text / "stats.json").read_text())["recommendation"]
    assert "Head-only's search was cut short (time cap after 1 of 3 trials)" in rec


def test_every_method_gets_the_same_trials_and_a_trial_seed_apart_from_the_confirmation_seeds(tiny_opt, tmp_path):
    cfg, tcfg = _cfg(tiny_opt, tmp_path / "run", methods="head,bitfit", trials=2)
    run_dir = tune(cfg, tcfg, report=False, **QUIET)
    tuned = read_manifest(run_dir)["tuned"]
    assert [tuned[m]["trials"] for m in ("head", "bitfit")] == [2, 2]
    assert tuned["head"]["cut_short"] is None and tuned["bitfit"]["cut_short"] is None
    cfg, tcfg = _cfg(tiny_opt, tmp_path / "other", seeds=(0, 1), trial_seed=1)
    with pytest.raises(ConfigError, match="--trial-seed 1 is also a confirmation seed"):
        tune(cfg, tcfg, report=False, **QUIET)
    assert not (tmp_path / "other").exists(), "refused before the run folder is made"


def test_a_default_arm_equal_to_the_tuned_configuration_reuses_its_runs(tiny_opt, tmp_path, monkeypatch):
    """trials=1: the only trial is the default configuration, so the default arm is the tuned one: not retrained."""
    from sendit.run.method import train_method as real

    trained = []
    monkeypatch.setattr("sendit.recipes.tune.search.train_method", lambda ctx, name, seed, **kw: trained.append(
        (kw.get("label"), seed)) or real(ctx, name, seed, **kw))
    cfg, tcfg = _cfg(tiny_opt, tmp_path / "run", methods="bitfit", seeds=(0, 1), trials=1, defaults=True)
    run_dir = tune(cfg, tcfg, report=False, **QUIET)
    assert trained == [("bitfit", 0), ("bitfit", 1)], "the default arm is not retrained"
    tuned = pd.read_csv(run_dir / "bitfit_inference_predictions.csv")
    default = pd.read_csv(run_dir / "bitfit-default_inference_predictions.csv")
    assert set(default["method"]) == {"bitfit-default"} and set(default["same_as"]) == {"bitfit"}
    assert default["prediction"].tolist() == tuned["prediction"].tolist()
    assert read_manifest(run_dir)["status"]["bitfit-default/seed1"] == "done"


def test_head_trials_train_on_features_computed_once_as_through_the_whole_model(tiny_opt, tmp_path, monkeypatch):
    """tiny_opt has no dropout, so a head trained on features computed once follows the path of one trained
    through the whole model, epoch by epoch; and the frozen model runs once per split, however many trials."""
    from sendit.train import features as feats
    from sendit.run.context import Context

    calls, real = [], feats.head_inputs
    monkeypatch.setattr(feats, "head_inputs", lambda model, data, *a: calls.append(len(data)) or real(model, data, *a))
    cfg, _ = _cfg(tiny_opt, tmp_path / "run")
    ctx = Context.build(cfg, tmp_path / "run", log=lambda s: None)
    cache: dict = {}
    runs = {}
    for label, features in (("whole model", None), ("features", cache), ("features again", cache)):
        rows: list[dict] = []
        value = tune_trials.train_trial(ctx, "head", {"lr": 0.05}, 0, {}, lambda epoch, row: rows.append(row),
                                        lambda s: None, label, features)
        runs[label] = (value, [[r[k] for k in ("train_loss", "val_loss", "val_f1")] for r in rows])
    assert calls == [64, 24], "train and validation features are computed once, for both trials"
    assert runs["features"] == runs["features again"]
    (plain_f1, plain), (cached_f1, cached) = runs["whole model"], runs["features"]
    assert len(cached) == len(plain) == 2
    np.testing.assert_allclose(cached, plain, atol=paths_atol(1e-5))
    assert cached_f1 == pytest.approx(plain_f1, abs=paths_atol(1e-6))


def test_a_head_that_reads_whole_sequences_trains_through_the_whole_model(tmp_path):
    """RoBERTa's head takes every position and picks the first itself: no features, the same trial as without."""
    from transformers import RobertaConfig

    from sendit.train.models import load_tokenizer, model_from_config
    from sendit.run.context import Context

    tok = load_tokenizer(str(OPT_TOKENIZER))
    config = RobertaConfig(vocab_size=50272, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=160, pad_token_id=1,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    folder = tmp_path / "tiny-roberta"
    model_from_config(config, tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    cfg, _ = _cfg(folder, tmp_path / "run")
    ctx = Context.build(cfg, tmp_path / "run", log=lambda s: None)
    cache: dict = {}
    f1s = [tune_trials.train_trial(ctx, "head", {"lr": 0.05}, 0, {}, lambda e, r: None, lambda s: None, "t", features)
           for features in (cache, None)]
    assert list(cache.values()) == [None], "the head's input was whole sequences: nothing cached"
    assert f1s[0] == f1s[1]


@pytest.mark.parametrize("head_features, computed", [(True, 4), (False, 0)])
def test_the_sweep_computes_head_features_only_when_asked(tiny_opt, tmp_path, monkeypatch, head_features, computed):
    from sendit.train import features as feats

    calls, real = [], feats.head_inputs
    monkeypatch.setattr(feats, "head_inputs", lambda *a: calls.append(1) or real(*a))
    cfg, tcfg = _cfg(tiny_opt, tmp_path / "run", methods="head,bitfit", trials=2, head_features=head_features)
    trials = _trials(tune(cfg, tcfg, report=False, **QUIET))
    # search: train and validation once for the trial seed; confirmation, trained as the trials were: once more for
    # its seed (the frozen part's new parameters are drawn per seed)
    assert len(calls) == computed and set(trials["state"]) == {"complete"} and len(trials) == 4


def test_a_failed_trial_is_recorded_and_the_sweep_goes_on(tiny_opt, tmp_path, monkeypatch):
    calls = []
    real_fit = tune_trials.fit

    def flaky_fit(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise TrainingError("head trial 1: the training loss became nan in epoch 1.")
        return real_fit(*a, **kw)

    monkeypatch.setattr(tune_trials, "fit", flaky_fit)
    url = f"sqlite:///{tmp_path / 'study.db'}"  # --storage: an RDB URL instead of the run folder's journal
    cfg, tcfg = _cfg(tiny_opt, tmp_path / "run", storage=url)
    run_dir = tune(cfg, tcfg, report=False, **QUIET)
    trials = _trials(run_dir).set_index("trial")
    assert trials["state"].tolist() == ["complete", "failed", "complete"]
    assert "loss became nan" in trials.loc[1, "note"]
    assert read_manifest(run_dir)["status"] == {"head/seed0": "done"}
    assert not (run_dir / tune_trials.STUDY_JOURNAL).exists()
    assert len(optuna.load_study(study_name="run-head", storage=url).trials) == 3


def test_busy_machine_is_recorded_and_warned_about():
    results = pd.DataFrame({"load_avg_1m_before": [2.1, 3.6], "torch_threads": [2, 2]})
    data = RunData(results=results, epochs=pd.DataFrame(), metrics=pd.DataFrame(), predictions=pd.DataFrame(),
                   names=[])
    trials = pd.DataFrame({"load_avg_1m": [1.0, 5.0, 2.0], "cores": [2, 2, 2]})
    notes = busy_notes(data, trials)
    assert len(notes) == 2 and "1 of 2 training runs" in notes[0] and "1 of 3 tuning trials" in notes[1]
    assert busy_notes(data.__class__(results.assign(load_avg_1m_before=2.5), *[pd.DataFrame()] * 3, []),
                      trials.assign(load_avg_1m=1.0)) == []


def test_a_killed_sweep_resumes_without_rerunning_finished_trials(tiny_opt, tmp_path, monkeypatch):
    calls = []
    real_fit = tune_trials.fit

    def killed_in_third_trial(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what the journal sees of a kill: trial 2 started and never finished
        return real_fit(*a, **kw)

    monkeypatch.setattr(tune_trials, "fit", killed_in_third_trial)
    cfg, tcfg = _cfg(tiny_opt, tmp_path / "run", trials=9)  # TPE still samples at random for 3 trials
    cfg.train.epochs = 1
    with pytest.raises(KeyboardInterrupt):
        tune(cfg, tcfg, report=False, **QUIET)
    run_dir = tmp_path / "run"
    before = _trials(run_dir).set_index("trial")
    assert before["state"].tolist() == ["complete", "complete"]

    calls.clear()
    monkeypatch.setattr(tune_trials, "fit", lambda *a, **kw: (calls.append(1), real_fit(*a, **kw))[1])
    assert main(["tune", "--resume", str(run_dir), "--no-report"]) == 0
    after = _trials(run_dir).set_index("trial")
    assert len(calls) == 7, "only the budget left (the interrupted trial's included) is run"
    assert after.loc[[0, 1], ["objective", "started"]].equals(before.loc[[0, 1], ["objective", "started"]])
    assert after.loc[2, "state"] == "failed" and after.loc[2, "note"].startswith("interrupted")
    assert (after.loc[3:, "state"] == "complete").all() and len(after) == 10
    assert not set(after.loc[3:, "params"]) & set(after.loc[[0, 1], "params"]), "a resumed sampler must not replay"
    assert read_manifest(run_dir)["status"] == {"head/seed0": "done"}


def test_two_workers_share_one_journal(tiny_opt, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    real_fit = tune_trials.fit

    def wait_for_the_other_worker(*a, **kw):
        # This process (worker 0) would finish every tiny trial before worker 1 has imported torch: its first
        # trial waits until worker 1 runs one too, so that the test sees both share the study.
        study = optuna.load_study(study_name="head", storage=tune_trials.open_storage(None, run_dir))
        deadline = time.monotonic() + 120
        while len(study.get_trials(states=(optuna.trial.TrialState.RUNNING,))) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        monkeypatch.setattr(tune_trials, "fit", real_fit)
        return real_fit(*a, **kw)

    monkeypatch.setattr(tune_trials, "fit", wait_for_the_other_worker)
    cfg, tcfg = _cfg(tiny_opt, run_dir, trials=5, workers=2)
    cfg.train.epochs = 1
    tune(cfg, tcfg, report=False, **QUIET)
    trials = _trials(run_dir)
    real = trials[~trials["note"].astype(str).str.startswith("over budget")]
    assert sorted(real["trial"]) == list(range(len(real))) and len(real) == 5
    assert set(real["state"]) == {"complete"} and set(real["worker"]) == {0, 1}, "both processes ran trials"
    assert read_manifest(run_dir)["status"] == {"head/seed0": "done"}


@pytest.mark.slow  # a local Ray instance takes ~30 s to start
def test_ray_backend_runs_the_same_trials_and_writes_the_same_trials_csv(tiny_opt, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cfg, tcfg = _cfg(tiny_opt, tmp_path / "run", trials=2, backend="ray", workers=2)
        run_dir = tune(cfg, tcfg, report=False, **QUIET)
    finally:
        ray.shutdown()
    trials = _trials(run_dir)
    assert trials.columns.tolist() == TRIAL_COLUMNS and trials["trial"].tolist() == [0, 1]
    assert trials.loc[0, "lr"] == get_method("head").default_lr  # the default configuration is trial 0
    assert set(trials["state"]) <= {"complete", "pruned"} and (trials["epochs_run"] >= 1).all()
    assert (trials["trainable_params"] > 0).all() and (trials["peak_memory_mb"] > 0).all()
    assert read_manifest(run_dir)["status"] == {"head/seed0": "done"}
    assert pd.read_csv(run_dir / "head_results.csv")["lr"].iloc[0] == pytest.approx(
        json.loads(trials.loc[trials["objective"].idxmax(), "params"])["lr"])


def test_ray_trials_asha_stopped_are_pruned_and_never_selected(tiny_opt, tmp_path):  # ~40 s: a real Ray instance
    """A real local Ray Tune search (no mock): ASHA stops trials after their first epoch, Ray marks them done, and
    trials.csv must still call them pruned; the confirmed configuration is a finished trial's."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cfg, tcfg = _cfg(tiny_opt, tmp_path / "run", seeds=(0,), trials=6, backend="ray", start_from_defaults=False,
                         space={"head": {"lr": {"low": 1e-6, "high": 1.0, "log": True}}})
        cfg.train.epochs = 3
        run_dir = tune(cfg, tcfg, report=False, **QUIET)
    finally:
        ray.shutdown()
    trials = _trials(run_dir)
    pruned, done = trials[trials["state"] == "pruned"], trials[trials["state"] == "complete"]
    assert len(pruned) >= 1 and (pruned["epochs_run"] < 3).all(), trials[["state", "epochs_run", "lr"]]
    assert pruned["note"].str.startswith("stopped by ASHA").all()
    assert len(done) >= 1
    best = read_manifest(run_dir)["tuned"]["head"]["trial"]
    assert best in set(done["trial"]), "a trial the scheduler stopped is never the tuned configuration"
    assert (trials["epochs_run"] == trials["val_f1_by_epoch"].map(lambda v: len(json.loads(v)))).all()


def test_ray_results_become_trials_csv_rows_in_creation_order(tmp_path):
    from types import SimpleNamespace

    from sendit.recipes.tune.ray_tune import FINISHED, trial_rows

    def result(number, lr, f1s, finished=True, error=None, t=0.0):
        df = pd.DataFrame({"val_f1": f1s, "val_accuracy": f1s, "timestamp": [t + i for i in range(len(f1s))],
                           "lr": lr, "time_sec": 1.0, "trainable_params": 32, "peak_memory_mb": 500.0,
                           "load_avg_1m": 1.0, "cores": 2, "worker": "host:1"})
        folder = tmp_path / f"_trial_0123abcd_{number}_lr={lr}_2026"
        folder.mkdir()
        if finished:  # the trial's extra report at its end, which repeats its last epoch
            df = pd.concat([df, df.tail(1).assign(**{FINISHED: True})], ignore_index=True)
        return SimpleNamespace(path=str(folder), metrics={"done": True}, metrics_dataframe=df, config={"lr": lr},
                               error=error)

    # the second trial reported first (they ran side by side): numbering follows creation, not reports; Ray says
    # done=True of the one its scheduler stopped too
    rows = trial_rows("head", [result(2, 0.01, [0.5], finished=False, t=0), result(1, 0.02, [0.6, 0.7], t=5),
                               result(3, 0.03, [], finished=False, error=RuntimeError("loss became nan"), t=9)])
    assert rows.columns.tolist() == TRIAL_COLUMNS and rows["trial"].tolist() == [0, 1, 2]
    assert rows["lr"].tolist()[:2] == [0.02, 0.01] and rows["state"].tolist() == ["complete", "pruned", "failed"]
    assert rows["objective"].tolist()[:2] == [0.7, 0.5] and "loss became nan" in rows.loc[2, "note"]


def test_a_failed_confirmation_exits_1_as_documented_and_the_others_finish(tiny_opt, tmp_path, monkeypatch, capsys):
    """docs/reliability.md: a run whose method failed part-way exits 1 (before: sendit tune said 2, bad input)."""
    real = __import__("sendit.recipes.tune.search", fromlist=["train_method"]).train_method

    def failing(ctx, name, seed, **kw):
        if name == "bitfit":
            raise TrainingError("the training loss became nan in epoch 1")
        return real(ctx, name, seed, **kw)

    monkeypatch.setattr("sendit.recipes.tune.search.train_method", failing)
    code = main(["tune", "--model", str(tiny_opt), "--methods", "head,bitfit", "--train-size", "64", "--val-size",
                 "24", "--test-size", "40", "--epochs", "1", "--batch-size", "16", "--threads", "1", "--trials", "1",
                 "--no-report", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "sendit tune: error: 1 of 2 method runs failed (bitfit/seed0 failed:" in err
    assert read_manifest(tmp_path / "run")["status"]["head/seed0"] == "done"
