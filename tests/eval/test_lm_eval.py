"""lm-evaluation-harness on a tiny local task: the native `pretrainlab` model gives the accuracy computed by hand
from the likelihood engine, per-request log-likelihoods equal to an explicit full forward, lm_eval's rolling
windows and greedy generation; `pretrainlab lm-eval` runs lm_eval's CLI with it; the Hugging Face export
scored by lm_eval's `hf` model agrees with it."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

pytest.importorskip("lm_eval")

from helpers import tiny_run_config, train_run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SUBJECTS = {"the cat": "sleeps", "a dog": "barks", "my friend": "reads", "the bird": "sings"}
N_DOCS = 24


def sentence(rng: random.Random) -> str:
    subject = rng.choice(list(SUBJECTS))
    return f"{subject} {SUBJECTS[subject]} {rng.choice(['today', 'now', 'here'])}."


def task_rows(rng: random.Random) -> list[dict[str, Any]]:
    rows = []
    for i in range(N_DOCS):
        subject = rng.choice(list(SUBJECTS))
        choices = list(SUBJECTS.values())
        rng.shuffle(choices)
        rows.append({
            # half the questions end with a space: lm_eval moves it onto the continuation
            "query": subject + (" " if i % 2 else ""),
            "choices": choices,
            "options": [("" if i % 2 else " ") + c for c in choices],  # what follows the query, as lm_eval sees it
            "gold": choices.index(SUBJECTS[subject]),
            "text": " ".join(sentence(rng) for _ in range(1 + i % 7)),  # 1..7 sentences: some past the window
        })
    return rows


def task_yaml(name: str, data: Path, cache: Path, body: str) -> str:
    return (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files: {{test: {data}}}\n"
            f"  cache_dir: {cache}\ntest_split: test\n{body}")


MC = """output_type: multiple_choice
doc_to_text: "{{query}}"
doc_to_choice: "{{options}}"
doc_to_target: "{{gold}}"
target_delimiter: ""
metric_list:
  - metric: acc
"""
PPL = """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list:
  - metric: word_perplexity
  - metric: bits_per_byte
"""
GEN = """output_type: generate_until
doc_to_text: "{{query}}"
doc_to_target: "{{choices[gold]}}"
generation_kwargs:
  until: ["."]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny run on a BPE corpus, three local tasks over one jsonl, and lm_eval's results for the native model."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from pretrainlab.config import PrepareConfig
    from pretrainlab.data.prepare import prepare
    from pretrainlab.eval.lm_eval_model import PretrainlabLM

    tmp = tmp_path_factory.mktemp("lm_eval")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf_home"),
                           "HF_DATASETS_CACHE": str(tmp / "hf_datasets"), "TOKENIZERS_PARALLELISM": "false"}.items():
            mp.setenv(key, value)
        rng = random.Random(0)
        corpus = tmp / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"text": " ".join(sentence(rng) for _ in range(6))}) + "\n"
                                  for _ in range(300)))
        prepare(PrepareConfig.model_validate({
            "sources": [{"type": "jsonl", "domain": "web", "paths": [str(corpus)]}],
            "tokenizer": {"kind": "bpe", "vocab_size": 300, "min_frequency": 1},
            "validation": {"fraction": 0.0}, "output": str(tmp / "prepared"),
        }), progress=False)
        run = train_run(tiny_run_config(tmp / "runs", tmp / "prepared", train={"steps": 40}))

        rows = task_rows(random.Random(1))
        tasks = tmp / "tasks"
        tasks.mkdir()
        data = tasks / "data.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        for name, body in (("plab_mc", MC), ("plab_ppl", PPL), ("plab_gen", GEN)):
            (tasks / f"{name}.yaml").write_text(task_yaml(name, data, tmp / "datasets_cache", body))

        lm = PretrainlabLM(run=str(run), device="cpu")
        manager = TaskManager(include_path=str(tasks), include_defaults=False)
        results = simple_evaluate(model=lm, tasks=["plab_mc", "plab_ppl", "plab_gen"], task_manager=manager,
                                  log_samples=True)
        yield SimpleNamespace(tmp=tmp, run=run, tasks=tasks, rows=rows, lm=lm, manager=manager, results=results,
                              model=lm.model, tok=lm.tokenizer, eot=lm.eot_token_id, mp=mp)


def split_pair(tok: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm_eval's rule, written out: trailing whitespace of the context joins the continuation; the whole text
    is encoded and split after as many tokens as the context alone has."""
    moved = context[len(context.rstrip()):]
    context, continuation = context[: len(context) - len(moved)], moved + continuation
    whole, ctx = tok.encode(context + continuation), tok.encode(context)
    return ctx, whole[len(ctx):]


def full_forward(model: Any, ctx: list[int], cont: list[int]) -> float:
    """log p(cont | ctx) from one plain forward of ctx + cont (no cache, no batching)."""
    ids = ctx + cont
    with torch.no_grad():
        lp = torch.log_softmax(model.logits(model(torch.tensor([ids[:-1]]))).float(), -1)[0]
    return float(lp[len(ctx) - 1 :].gather(-1, torch.tensor(cont)[:, None]).sum())


def test_multiple_choice_accuracy_is_the_engines_by_hand(world: Any) -> None:
    from pretrainlab.eval.likelihood import score_continuations

    pairs, golds = [], []
    for r in world.rows:
        pairs.append([split_pair(world.tok, r["query"], option) for option in r["options"]])
        golds.append(r["gold"])
    scores = score_continuations(world.model, [p for q in pairs for p in q], bos_id=world.eot)
    n = len(SUBJECTS)
    correct = [max(range(n), key=lambda j: scores[i * n + j].logprob) == g for i, g in enumerate(golds)]
    got = world.results["results"]["plab_mc"]["acc,none"]
    assert got == sum(correct) / len(correct)
    assert 0.0 < got  # the tiny model learned the subject-verb pairs at least a little

    # every request's log-likelihood, and a few against an explicit full forward
    samples = {s["doc_id"]: s for s in world.results["samples"]["plab_mc"]}
    for i, r in enumerate(world.rows):
        lls = [resp[0][0] for resp in samples[i]["resps"]]
        assert lls == pytest.approx([s.logprob for s in scores[i * n : (i + 1) * n]], abs=1e-5)
        if i < 4:
            for j, (context, continuation) in enumerate(samples[i]["arguments"]):
                assert (context, continuation) == (r["query"], r["options"][j])
                want = full_forward(world.model, *split_pair(world.tok, context, continuation))
                assert lls[j] == pytest.approx(want, abs=1e-5)


def test_rolling_loglikelihood_uses_lm_evals_windows(world: Any) -> None:
    from pretrainlab.eval.likelihood import score_rolling

    from lm_eval.api.instance import Instance

    L = world.lm.max_length
    samples = {s["doc_id"]: s for s in world.results["samples"]["plab_ppl"]}
    # the same texts again, each twice: duplicated windows share their contexts in the engine
    texts = [r["text"] for r in world.rows[:8]]
    again = world.lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), 0) for t in texts * 2])
    lengths = set()
    for i, r in enumerate(world.rows[:8]):
        toks = world.tok.encode(r["text"])
        lengths.add(len(toks) > L)
        # windows predict toks[0:L], [L:2L], ...; the last, partial one sees a full window before it
        want, start = 0.0, 0
        while start < len(toks):
            end = min(start + L, len(toks))
            history = ([world.eot] + toks)[max(0, end - L) : start + 1] if start else [world.eot]
            want += full_forward(world.model, history, toks[start:end])
            start = end
        got = samples[i]["resps"][0][0]
        assert got == pytest.approx(want, abs=1e-4)
        assert again[i] == pytest.approx(want, abs=1e-4) and again[i + 8] == pytest.approx(want, abs=1e-4)
        if len(toks) <= L:
            assert got == pytest.approx(score_rolling(world.model, toks, bos_id=world.eot)[0], abs=1e-4)
    assert lengths == {True, False}  # both single- and multi-window texts were checked


def greedy_by_hand(world: Any, context: str, stop: str, max_tokens: int) -> str:
    """Greedy decoding with a plain forward of the last max_seq_len ids per step (no cache)."""
    model, tok, L = world.model, world.tok, world.lm.max_length
    ids, new, text = tok.encode(context), [], ""
    for _ in range(max_tokens):
        with torch.no_grad():
            logits = model.logits(model(torch.tensor([ids[-L:]])))[0, -1].float()
        logits[tok.pad_id] = float("-inf")
        nxt = int(logits.argmax())
        if nxt == world.eot:
            break
        ids.append(nxt)
        new.append(nxt)
        text = tok.decode(new)
        if stop in text:
            break
    return text.split(stop)[0]


def test_generation_is_greedy_until_the_stop_string(world: Any) -> None:
    from lm_eval.api.instance import Instance

    samples = {s["doc_id"]: s for s in world.results["samples"]["plab_gen"]}
    for i, r in enumerate(world.rows[:6]):
        assert samples[i]["resps"][0][0] == greedy_by_hand(world, r["query"], ".", 8)
    # a context near the window's end: generation runs past it, each step on the last max_seq_len tokens
    long = world.rows[4]["text"]
    assert len(world.tok.encode(long)) > world.lm.max_length - 10
    request = Instance("generate_until", {}, (long, {"until": ["zzz"], "max_gen_toks": 12}), 0)
    got = world.lm.generate_until([request])[0]
    assert got == greedy_by_hand(world, long, "zzz", 12) and len(world.tok.encode(got)) >= 10


def test_empty_context_is_conditioned_on_end_of_text(world: Any) -> None:
    from lm_eval.api.instance import Instance

    request = Instance("loglikelihood", {}, ("", "the cat sleeps now."), 0)
    ((got, _),) = world.lm.loglikelihood([request])
    assert got == pytest.approx(full_forward(world.model, [world.eot], world.tok.encode("the cat sleeps now.")),
                                abs=1e-5)


def test_pretrainlab_lm_eval_command(world: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    import lm_eval.tasks

    from pretrainlab.cli import main

    # lm_eval's CLI indexes its ~200 built-in task folders (seconds); the local task folder is all this needs
    monkeypatch.setattr(lm_eval.tasks, "TaskManager",
                        functools.partial(lm_eval.tasks.TaskManager, include_defaults=False))
    out = world.tmp / "cli_out"
    code = main(["lm-eval", "--model_args", f"pretrained={world.run}", "--tasks", "plab_mc",
                 "--include_path", str(world.tasks), "--output_path", str(out)])
    assert code == 0
    assert "plab_mc" in capsys.readouterr().out
    (saved,) = out.rglob("results_*.json")
    assert saved.parent.name.endswith("tiny")  # lm_eval names the folder after pretrained=
    got = json.loads(saved.read_text())["results"]["plab_mc"]["acc,none"]
    assert got == world.results["results"]["plab_mc"]["acc,none"]


def test_user_errors_say_what_to_do(world: Any) -> None:
    from pretrainlab.errors import CheckpointError, ConfigError
    from pretrainlab.eval.lm_eval_cli import with_defaults
    from pretrainlab.eval.lm_eval_model import PretrainlabLM

    with pytest.raises(ConfigError, match="needs run="):
        PretrainlabLM()
    with pytest.raises(ConfigError, match="not known to the pretrainlab model: tokenizer"):
        PretrainlabLM(run=str(world.run), tokenizer="gpt2")
    with pytest.raises(CheckpointError, match="step-999"):
        PretrainlabLM(run=str(world.run), checkpoint="step-999")
    with pytest.raises(ConfigError, match="dtype='int8' is not one of auto, float32"):
        PretrainlabLM(run=str(world.run), device="cpu", dtype="int8")
    with pytest.raises(ConfigError, match="decodes greedily"):
        world.lm._generation_settings({"until": ["."], "do_sample": True})
    assert with_defaults(["--tasks", "x"]) == ["--model", "pretrainlab", "--batch_size", "auto", "--device", "auto",
                                               "--tasks", "x"]
    assert with_defaults(["run", "--model", "hf", "-b", "4", "--device", "cpu"]) == [
        "run", "--model", "hf", "-b", "4", "--device", "cpu"]
    assert with_defaults(["ls", "tasks"]) == ["ls", "tasks"]


def test_hf_export_scores_the_same_through_lm_evals_hf_model(world: Any) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # lm_eval's hf model needs it
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from pretrainlab.eval.hf_export import export_hf

    out = export_hf(world.run, world.tmp / "export")
    # logits_cache=False: lm_eval's logits cache shares one forward between requests whose context +
    # continuation[:-1] are the same tokens, and slices it with the first one's continuation length, which
    # is wrong for rolling windows of two documents that split the same tokens differently (docs/lm-eval.md)
    hf = HFLM(pretrained=str(out), device="cpu", dtype="float32", batch_size=16, logits_cache=False)
    theirs = simple_evaluate(model=hf, tasks=["plab_mc", "plab_ppl", "plab_gen"], task_manager=world.manager,
                             log_samples=True)
    ours = world.results
    assert theirs["results"]["plab_mc"]["acc,none"] == ours["results"]["plab_mc"]["acc,none"]
    assert theirs["results"]["plab_gen"]["exact_match,none"] == ours["results"]["plab_gen"]["exact_match,none"]
    for task in ("plab_mc", "plab_ppl", "plab_gen"):
        a = sorted(ours["samples"][task], key=lambda s: s["doc_id"])
        b = sorted(theirs["samples"][task], key=lambda s: s["doc_id"])
        assert [s["arguments"] for s in a] == [s["arguments"] for s in b]
        for x, y in zip(a, b):
            for rx, ry in zip(x["resps"], y["resps"]):
                if task == "plab_gen":
                    assert rx[0] == ry[0]
                elif task == "plab_mc":
                    assert rx[0][0] == pytest.approx(ry[0][0], abs=1e-4) and rx[0][1] == ry[0][1]
                else:
                    assert rx[0] == pytest.approx(ry[0], abs=1e-4)


def test_precision_defaults_to_the_runs_evaluation_precision(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """dtype unset (or auto) is what `pretrainlab eval` uses (eval_autocast_dtype: bf16 on CUDA unless the run
    trained in fp32); an explicit dtype wins."""
    import pretrainlab.eval.entry
    from pretrainlab.eval.lm_eval_model import PretrainlabLM

    assert world.lm._autocast is None  # fp32 on the CPU
    seen = []

    def bf16_on_this_device(cfg: Any, device: Any) -> torch.dtype:
        seen.append((cfg.train.precision, str(device)))
        return torch.bfloat16

    monkeypatch.setattr(pretrainlab.eval.entry, "eval_autocast_dtype", bf16_on_this_device)
    assert PretrainlabLM(run=str(world.run), device="cpu")._autocast is torch.bfloat16
    assert PretrainlabLM(run=str(world.run), device="cpu", dtype="auto")._autocast is torch.bfloat16
    assert seen == [("fp32", "cpu")] * 2
    assert PretrainlabLM(run=str(world.run), device="cpu", dtype="float32")._autocast is None


def test_progress_bars_follow_disable_tqdm(world: Any, capsys: Any) -> None:
    from lm_eval.api.instance import Instance

    ll = [Instance("loglikelihood", {}, ("the cat", " sleeps"), 0)]
    gen = [Instance("generate_until", {}, ("the cat", {"until": ["."], "max_gen_toks": 2}), 0)]
    world.lm.loglikelihood(ll, disable_tqdm=True)
    world.lm.generate_until(gen, disable_tqdm=True)
    assert "pretrainlab" not in capsys.readouterr().err
    world.lm.loglikelihood(ll)
    world.lm.generate_until(gen)
    err = capsys.readouterr().err
    assert "pretrainlab loglikelihood" in err and "pretrainlab generate_until" in err


def test_data_arg_finds_a_moved_prepared_folder(world: Any, tmp_path: Path) -> None:
    import shutil

    from pretrainlab.errors import DataError
    from pretrainlab.eval.lm_eval_model import PretrainlabLM

    moved = tmp_path / "run"
    shutil.copytree(world.run, moved)
    config = moved / "config.yaml"
    config.write_text(config.read_text().replace(str(world.tmp / "prepared"), str(tmp_path / "gone")))
    with pytest.raises(DataError, match="--data"):
        PretrainlabLM(run=str(moved), device="cpu")
    lm = PretrainlabLM(run=str(moved), data=str(world.tmp / "prepared"), device="cpu")
    assert lm.tok_encode("the cat sleeps") == world.lm.tok_encode("the cat sleeps")


def test_several_processes_are_refused(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from pretrainlab.errors import ConfigError
    from pretrainlab.eval.lm_eval_model import PretrainlabLM

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="runs in one process, but this is one of 2"):
        PretrainlabLM(run=str(world.run), device="cpu")
