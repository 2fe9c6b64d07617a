"""The llama.cpp engine on a tiny float32 Llama written as a GGUF file (tests/tiny_gguf.py): the
same results as the transformers engine in float32 on the same file (greedy and seeded samples,
penalties, stop strings, constraints, log-probabilities, token counts, streaming), a chat's next
turn reading only its new tokens, cancels, and `generate`/`chat --engine llama.cpp` end to end."""

from __future__ import annotations

import json

import pytest

from gptcli.engine import llamacpp_native, speculative
from gptcli.engine.api import Delta, Finished, Request
from gptcli.engine.constraints import Constraint
from gptcli.engine.llamacpp_engine import LlamaCppEngine
from gptcli.engine.sampling import SamplingParams
from gptcli.engine.transformers_engine import TransformersEngine
from gptcli.models import LoadOptions, load_model
from gptcli.models.kinds import CAUSAL_LM
from tests.tiny_gguf import build_llama_gguf

PROMPTS = ["the cat sat on the mat", "hello world", "write a poem about the sea and the moon",
           "one two three four five"]


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    return build_llama_gguf(tmp_path_factory.mktemp("llamacpp") / "tiny.gguf")


@pytest.fixture(scope="module")
def ours(gguf):
    return load_model(LoadOptions(str(gguf), engine="llama.cpp"), accept=(CAUSAL_LM,), command="generate")


@pytest.fixture(scope="module")
def reference(gguf):
    return load_model(LoadOptions(str(gguf), dtype="float32"), accept=(CAUSAL_LM,), command="generate")


def _ids(lm, text: str) -> tuple[int, ...]:
    return tuple(lm.tokenizer(text)["input_ids"])


def _run(engine, requests) -> dict:
    events = {}
    steps = 0
    for event in engine.run(requests):
        events.setdefault(event.request_id, []).append(event)
        steps += 1
        assert steps < 2000
    return events


def _finished(events) -> dict:
    return {key: [e for e in value if isinstance(e, Finished)][-1] for key, value in events.items()}


def _both(ours, reference, make, monkeypatch) -> tuple[dict, dict]:
    """The same requests (``make(lm)``) through llama.cpp and through transformers one at a time."""
    monkeypatch.setenv(speculative.DISABLE, "0")  # plain steps on the reference side
    mine = _finished(_run(LlamaCppEngine(ours), make(ours)))
    theirs = _finished(_run(TransformersEngine(reference, batch_size=1), make(reference)))
    return mine, theirs


def _same(mine: Finished, theirs: Finished) -> None:
    assert (mine.text, mine.prompt_tokens, mine.generated_tokens, mine.finish_reason) == \
        (theirs.text, theirs.prompt_tokens, theirs.generated_tokens, theirs.finish_reason)


def test_the_weights_load_once_and_only_llama_cpp_holds_them(ours):
    assert ours.native is not None and ours.placement.label == "llama.cpp"
    assert all(p.is_meta for p in ours.model.parameters())  # transformers keeps the config, no weights
    assert str(ours.device) == "cpu"


def test_greedy_results_equal_transformers_in_float32(ours, reference, monkeypatch):
    def make(lm):
        return [Request(i, _ids(lm, p), 24, key=str(i)) for i, p in enumerate(PROMPTS)]

    mine, theirs = _both(ours, reference, make, monkeypatch)
    assert set(mine) == set(theirs) == set(range(len(PROMPTS)))
    for key in mine:
        _same(mine[key], theirs[key])
    assert any(len(f.text) > 20 for f in mine.values())  # they did generate


def test_seeded_samples_penalties_stops_and_logprobs_equal_transformers(ours, reference, monkeypatch):
    settings = [SamplingParams(temperature=0.9, top_p=0.9, seed=3),
                SamplingParams(temperature=1.2, top_k=20, seed=5, repetition_penalty=1.3),
                SamplingParams(presence_penalty=1.0, frequency_penalty=0.5),
                SamplingParams(no_repeat_ngram_size=2)]

    def make(lm):
        return [Request((i, n), _ids(lm, p), 20, sampling, stop=(" the",) if n == 2 else (), key=f"{i}:{n}",
                        logprobs=2)
                for n, sampling in enumerate(settings) for i, p in enumerate(PROMPTS[:2])]

    mine, theirs = _both(ours, reference, make, monkeypatch)
    for key in mine:
        _same(mine[key], theirs[key])
        for a, b in zip(mine[key].logprobs, theirs[key].logprobs, strict=True):
            assert a.token_id == b.token_id and a.logprob == pytest.approx(b.logprob, abs=1e-3)
            assert [t for t, _ in a.top] == [t for t, _ in b.top]
    assert len({mine[(0, 0)].text, mine[(0, 1)].text}) == 2  # the seeds and settings did change the samples


def test_a_choice_constraint_holds(ours, reference, monkeypatch):
    choices = ("yes please", "no thanks", "maybe")

    def make(lm):
        return [Request(i, _ids(lm, p), 16, key=str(i), constraint=Constraint("choice", json.dumps(choices)))
                for i, p in enumerate(PROMPTS)]

    mine, theirs = _both(ours, reference, make, monkeypatch)
    for key in mine:
        assert mine[key].text in choices
        _same(mine[key], theirs[key])


def test_scoring_equals_transformers_and_reuses_the_shared_prompt(ours, reference):
    prompt = list(_ids(ours, PROMPTS[2]))
    rows = [(prompt, list(_ids(ours, " yes"))), (prompt, list(_ids(ours, " no thanks"))),
            (list(_ids(ours, PROMPTS[0])), list(_ids(ours, " maybe")))]
    mine = LlamaCppEngine(ours).prefix_scorer(prompt[:-1]).answer_logprobs(rows)
    theirs = TransformersEngine(reference).prefix_scorer(prompt[:-1]).answer_logprobs(rows)
    assert [len(r) for r in mine] == [len(a) for _, a in rows]
    for a, b in zip(mine, theirs):
        assert a == pytest.approx(b, abs=1e-4)
    windows = [(list(_ids(ours, PROMPTS[2])), 5), (list(_ids(ours, PROMPTS[0])), 3)]
    losses = LlamaCppEngine(ours).token_losses(windows)
    assert [len(x) for x in losses] == [5, 3]
    for a, b in zip(losses, TransformersEngine(reference).token_losses(windows)):
        assert a == pytest.approx(b, abs=1e-4)


def test_streamed_deltas_add_up_to_the_result(ours):
    events = _run(LlamaCppEngine(ours), [Request("s", _ids(ours, PROMPTS[2]), 24, stream=True)])["s"]
    deltas = [e.text for e in events if isinstance(e, Delta)]
    assert len(deltas) > 3 and "".join(deltas) == events[-1].text


def test_the_next_turn_reads_only_its_new_tokens_and_answers_as_a_fresh_engine(ours, monkeypatch):
    engine = LlamaCppEngine(ours)
    fed = []
    decode = engine.native._decode

    def counting(feeds):
        fed.extend((len(tokens), start) for _slot, tokens, start, _wanted in feeds)
        return decode(feeds)

    monkeypatch.setattr(engine.native, "_decode", counting)
    first = _ids(ours, PROMPTS[0])
    reply = _finished(_run(engine, [Request("a", first, 8)]))["a"]
    follow = first + _ids(ours, reply.text) + _ids(ours, " and then the dog")
    fed.clear()
    again = _finished(_run(engine, [Request("b", follow, 8)]))["b"]
    start = fed[0][1]
    assert start >= len(first) and fed[0][0] == len(follow) - start  # fed from past the shared part only
    monkeypatch.undo()
    fresh = _finished(_run(LlamaCppEngine(ours), [Request("b", follow, 8)]))["b"]
    _same(again, fresh)


def _counting_passes(monkeypatch, engine) -> list[int]:
    """How many sequences each llama_decode pass of ``engine``'s model reads, pass by pass."""
    passes = []
    decode = engine.native._decode

    def counting(feeds):
        passes.append(len(feeds))
        return decode(feeds)

    monkeypatch.setattr(engine.native, "_decode", counting)
    return passes


def test_rows_share_each_pass_and_each_gets_what_it_gets_alone(ours, monkeypatch):
    """The first row ends first: the rows above its slot move down into it (their caches copied)
    and go on as if nothing happened."""
    def make():
        return [Request("short", _ids(ours, PROMPTS[3]), 3, logprobs=1),
                Request("greedy", _ids(ours, PROMPTS[0]), 16),
                Request("sampled", _ids(ours, PROMPTS[1]), 16, SamplingParams(temperature=1.1, seed=4,
                                                                              repetition_penalty=1.3), key="k"),
                Request("stopped", _ids(ours, PROMPTS[2]), 20, stop=(" the",))]

    engine = LlamaCppEngine(ours, rows=4)
    passes = _counting_passes(monkeypatch, engine)
    moves = []
    move_down = engine.native.move_down
    monkeypatch.setattr(engine.native, "move_down", lambda slot: moves.append((slot, move_down(slot))) or moves[-1][1])
    together = _finished(_run(engine, make()))
    assert passes[0] == 4 and passes.count(4) >= 3  # the prompts in one pass, then the rows together
    assert any(to < start for start, to in moves)  # a row did move into the freed slot
    monkeypatch.undo()
    for request in make():
        alone = _finished(_run(LlamaCppEngine(ours, rows=1), [request]))[request.id]
        _same(together[request.id], alone)


def test_a_request_arriving_while_others_run_joins_them(ours, monkeypatch):
    """A server's case: the context grows from one sequence to more while a row runs; the running
    row's cache is rebuilt and its answer does not change."""
    first, second = Request("a", _ids(ours, PROMPTS[0]), 24), Request("b", _ids(ours, PROMPTS[2]), 10)
    engine = LlamaCppEngine(ours, rows=4)
    events = []
    engine.submit(first)
    for _ in range(3):
        events += engine.step()
    engine.submit(second)
    passes = _counting_passes(monkeypatch, engine)
    steps = 0
    while engine.has_work() and steps < 200:
        events += engine.step()
        steps += 1
    assert passes[0] == 2 and engine.native.slots >= 2  # "b" joined the running "a"
    monkeypatch.undo()
    done = {e.request_id: e for e in events if isinstance(e, Finished)}
    for request in (first, second):
        _same(done[request.id], _finished(_run(LlamaCppEngine(ours, rows=1), [request]))[request.id])


def test_cancel_ends_a_queued_and_a_running_request(ours):
    engine = LlamaCppEngine(ours)
    engine.submit(Request("run", _ids(ours, PROMPTS[0]), 50))
    engine.submit(Request("wait", _ids(ours, PROMPTS[1]), 50))
    events = engine.step()  # "run" prefilled
    engine.cancel("run")
    engine.cancel("wait")
    events += engine.step()
    done = {e.request_id: e for e in events if isinstance(e, Finished)}
    assert {done["run"].finish_reason, done["wait"].finish_reason} == {"cancelled"}
    assert not engine.has_work()


def test_generate_engine_llama_cpp_writes_the_same_records_in_order(cli, gguf, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    runs = {}
    for engine, extra in (("llama.cpp", []), ("transformers", ["--dtype", "float32"])):
        out = tmp_path / f"{engine}.jsonl"
        done = cli("generate", "--model", gguf, "--engine", engine, *extra, "--input", prompts, "--output", out,
                   "--max-new-tokens", "12", "--stats")
        assert done.exit_code == 0, done.stderr
        runs[engine] = [json.loads(line) for line in out.read_text().splitlines()]
        assert f"cpu/{'llama.cpp' if engine == 'llama.cpp' else 'float32'}" in done.stderr
    assert [r["prompt"] for r in runs["llama.cpp"]] == PROMPTS
    assert runs["llama.cpp"] == runs["transformers"]


def test_chat_engine_llama_cpp_answers_each_turn_as_transformers(cli, gguf):
    script = "hello there\nthe cat sat on the mat\nhello there\n"
    replies = {}
    for engine, extra in (("llama.cpp", []), ("transformers", ["--dtype", "float32"])):
        done = cli("chat", "--model", gguf, "--engine", engine, *extra, "--max-new-tokens", "8", input=script)
        assert done.exit_code == 0, done.stderr
        replies[engine] = done.stdout.splitlines()
    assert len(replies["llama.cpp"]) == 3 and replies["llama.cpp"] == replies["transformers"]


@pytest.mark.parametrize("args, message", [
    (["--engine", "llama"], "unknown --engine 'llama'"),
    (["--engine", "llama.cpp", "--dtype", "int4"], "takes --dtype auto (the GGUF's own weight types)"),
    (["--engine", "llama.cpp", "--device", "cuda"], "runs on the CPU; drop --device"),
])
def test_bad_engine_options_are_usage_errors(cli, gguf, args, message):
    done = cli("generate", "--model", gguf, "hello", *args)
    assert done.exit_code == 2 and message in done.stderr and done.stdout == ""


def test_dtype_runs_a_copy_recast_once_into_the_cache(cli, gguf, session_dir):
    """--dtype float32 on a float32 file: the same weights, so the same answer as the file itself; a
    bfloat16 copy is written once (the second run reads it) and holds bfloat16 weights."""
    import ctypes

    asked = ("generate", "--model", gguf, "--engine", "llama.cpp", "the cat sat", "--max-new-tokens", "12")
    own = cli(*asked)
    assert own.exit_code == 0, own.stderr
    same = cli(*asked, "--dtype", "float32")
    assert same.exit_code == 0 and same.stdout == own.stdout and "in float32 in" in same.stderr
    first, second = cli(*asked, "--dtype", "bfloat16"), cli(*asked, "--dtype", "bfloat16")
    assert first.exit_code == second.exit_code == 0 and first.stdout == second.stdout != ""
    assert "in bfloat16 in" in first.stderr and "in bfloat16 in" not in second.stderr  # written once
    copies = list((session_dir / "gptcli-cache").rglob("*-bfloat16-*.gguf"))
    assert len(copies) == 1
    model = llamacpp_native.NativeModel(copies[0])
    buffer = ctypes.create_string_buffer(16)
    model._lib.llama_model_meta_val_str(model.model, b"general.file_type", buffer, len(buffer))
    assert buffer.value == b"32"  # LLAMA_FTYPE_MOSTLY_BF16
    model.close()


def test_llama_cpp_needs_a_gguf_file(cli, tiny_llama):
    done = cli("generate", "--model", tiny_llama, "--engine", "llama.cpp", "hello")
    assert done.exit_code == 2 and "runs GGUF files" in done.stderr and "--engine transformers" in done.stderr


def test_without_llama_cpp_python_the_error_gives_the_install_command(cli, gguf, monkeypatch):
    monkeypatch.setattr(llamacpp_native, "available", lambda: False)
    done = cli("generate", "--model", gguf, "--engine", "llama.cpp", "hello")
    assert done.exit_code == 2 and "pip install 'llama-cpp-python==" in done.stderr


@pytest.mark.parametrize("command", [["summarize", "--length", "short"], ["translate", "--to", "fr"]])
def test_summarize_and_translate_on_llama_cpp_equal_transformers(cli, gguf, command):
    text = "the cat sat on the mat and the dog ran to the big red house in the city of paris"
    outputs = {}
    for engine, extra in (("llama.cpp", []), ("transformers", ["--dtype", "float32"])):
        done = cli(*command, "--model", gguf, "--engine", engine, *extra, "--max-new-tokens", "12", "--json", text)
        assert done.exit_code == 0, done.stderr
        outputs[engine] = json.loads(done.stdout)
    assert outputs["llama.cpp"] == outputs["transformers"] and outputs["llama.cpp"]["generated_tokens"] > 0


def test_a_rerun_on_another_engine_does_not_add_to_the_same_output(cli, gguf, tmp_path):
    out = tmp_path / "out.jsonl"
    first = cli("generate", "--model", gguf, "--engine", "llama.cpp", "--output", out, "--max-new-tokens", "4", "hi")
    assert first.exit_code == 0, first.stderr
    again = cli("generate", "--model", gguf, "--output", out, "--max-new-tokens", "4", "hi")
    assert again.exit_code == 2 and "--engine" in again.stderr


def test_eval_perplexity_on_llama_cpp_equals_transformers(cli, gguf, tmp_path):
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": p}) + "\n" for p in PROMPTS))
    reports = {}
    for engine, extra in (("llama.cpp", []), ("transformers", ["--dtype", "float32"])):
        done = cli("eval", "perplexity", "--data", data, "--model", gguf, "--engine", engine, *extra, "--json")
        assert done.exit_code == 0, done.stderr
        reports[engine] = json.loads(done.stdout)
    mine, theirs = reports["llama.cpp"], reports["transformers"]
    assert mine["tokens"] == theirs["tokens"] > 0
    assert mine["perplexity"] == pytest.approx(theirs["perplexity"], rel=1e-4)


def _quantized_copy(gguf, folder):
    """The tiny model in Q4_1, as a small downloaded GGUF comes (its output projection quantized too)."""
    import llama_cpp

    target = folder / "tiny-q4_1.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = 3  # LLAMA_FTYPE_MOSTLY_Q4_1
    assert llama_cpp.llama_model_quantize(str(gguf).encode(), str(target).encode(), params) == 0
    return target


def _tensor_bytes(path) -> dict:
    import gguf as gguf_format
    import numpy

    tensors = gguf_format.GGUFReader(str(path)).tensors
    return {t.name: (t.tensor_type.name, numpy.asarray(t.data).tobytes()) for t in tensors}


def test_a_quantized_small_model_runs_with_its_output_projection_in_bfloat16(cli, gguf, tmp_path, monkeypatch):
    """Without --dtype, on a CPU with native bfloat16: a copy written once whose output projection is
    bfloat16 and whose every other tensor is the file's own bytes; a float file, or a CPU without
    bfloat16 products, runs the file itself."""
    from gptcli.models import gguf_recast, placement

    quantized = _quantized_copy(gguf, tmp_path)
    monkeypatch.setattr(placement, "cpu_has_native_bf16", lambda: False)
    assert gguf_recast.with_bfloat16_output(quantized) == quantized
    monkeypatch.setattr(placement, "cpu_has_native_bf16", lambda: True)
    asked = ("generate", "--model", quantized, "--engine", "llama.cpp", "the cat sat", "--max-new-tokens", "12")
    first, second = cli(*asked), cli(*asked)
    assert first.exit_code == second.exit_code == 0, first.stderr
    assert first.stdout == second.stdout != ""
    assert "output projection in bfloat16" in first.stderr and "output projection" not in second.stderr
    copy = gguf_recast.with_bfloat16_output(quantized)
    source, written = _tensor_bytes(quantized), _tensor_bytes(copy)
    assert source["output.weight"][0] not in ("F32", "BF16") and written["output.weight"][0] == "BF16"
    assert {name: value for name, value in written.items() if name != "output.weight"} == \
        {name: value for name, value in source.items() if name != "output.weight"}
    assert gguf_recast.with_bfloat16_output(gguf) == gguf  # float32 already: nothing to gain
    assert gguf_recast.with_bfloat16_output(gguf) == gguf  # (the second answer from the kept marker)


def test_when_llama_cpp_cannot_write_that_copy_the_file_runs_as_it_is(gguf, tmp_path, monkeypatch, capsys):
    import llama_cpp

    from gptcli.models import gguf_recast, placement

    quantized = _quantized_copy(gguf, tmp_path)
    monkeypatch.setattr(placement, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(llama_cpp, "llama_model_quantize", lambda *args: 1)  # as a full disk would fail
    assert gguf_recast.with_bfloat16_output(quantized) == quantized
    assert "running tiny-q4_1.gguf as it is" in capsys.readouterr().err
