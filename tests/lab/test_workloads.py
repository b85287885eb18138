"""Workload schedules, parameter checks and trace validation (no engine needed)."""

import json

import pytest

from kvlab.lab import (Request, TraceError, WorkloadError, alternating, bursty, poisson, run_workload, trace)


def test_bursty_schedule_has_phases_and_pauses():
    reqs = bursty(3, 4, pause=2.5, max_tokens=16, prompt_len=10).requests()
    assert len(reqs) == 12
    assert [r.phase for r in reqs] == [0] * 4 + [1] * 4 + [2] * 4
    assert [r.at for r in reqs[:4]] == [0.0] * 4 and all(r.at == 2.5 for r in reqs[4:])
    assert all(r.prompt_len == 10 and r.max_tokens == 16 for r in reqs)
    assert len({r.seed for r in reqs}) == 12  # distinct prompts: no accidental prefix-cache sharing


def test_bursty_cycles_text_prompts():
    reqs = bursty(1, 3, 0, prompts=["a b", "c"]).requests()
    assert [r.prompt for r in reqs] == ["a b", "c", "a b"] and all(r.prompt_len is None for r in reqs)


def test_poisson_is_reproducible_and_within_duration():
    a, b = poisson(20, 3.0, max_tokens=8, seed=1).requests(), poisson(20, 3.0, max_tokens=8, seed=1).requests()
    assert [r.at for r in a] == [r.at for r in b]
    assert 20 < len(a) < 110 and all(0 <= r.at < 3.0 for r in a)
    assert [r.at for r in a] != [r.at for r in poisson(20, 3.0, max_tokens=8, seed=2).requests()]


def test_alternating_targets_each_server_in_turn():
    reqs = alternating(["m1", "m2"], rounds=2, burst_size=2, pause=1.0).requests()
    assert [r.target for r in reqs] == ["m1", "m1", "m2", "m2"] * 2
    assert [r.phase for r in reqs] == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("make, match", [
    (lambda: bursty(-1, 4, 1.0), "n_bursts must be >= 1"),
    (lambda: bursty(2, 0, 1.0), "burst_size must be >= 1"),
    (lambda: bursty(2, 2.5, 1.0), "burst_size must be an integer"),
    (lambda: bursty(2, 2, -1), "pause must be >= 0"),
    (lambda: bursty(2, 2, float("nan")), "pause must be a finite"),
    (lambda: bursty(2, 2, 1, max_tokens=0), "max_tokens must be >= 1"),
    (lambda: bursty(2, 2, 1, prompts=[]), "prompts must be a non-empty list"),
    (lambda: bursty(2, 2, 1, prompts=["x"], prompt_len=4), "not both"),
    (lambda: poisson(0, 10), "rate must be a positive"),
    (lambda: poisson(-2, 10), "rate must be a positive"),
    (lambda: poisson(1, 0), "duration must be > 0"),
    (lambda: poisson(1e6, 1e3), "more than max_requests"),
    (lambda: alternating([], 1), "at least one server"),
    (lambda: alternating(["a", "a"], 1), "same server twice"),
    (lambda: alternating(["a"], 0), "rounds must be >= 1"),
    (lambda: Request(at=-1, max_tokens=4, prompt_len=3), "at must be >= 0"),
    (lambda: Request(at=0, max_tokens=4), "exactly one of prompt"),
])
def test_invalid_parameters_raise_value_errors(make, match):
    with pytest.raises(WorkloadError, match=match) as e:
        make()
    assert isinstance(e.value, ValueError)


def test_unknown_target_is_refused_before_sending():
    from kvlab.lab import Client

    c = Client("http://127.0.0.1:9", "m1")  # nothing listens there; nothing may be sent
    with pytest.raises(WorkloadError, match="targets 'm2'"):
        run_workload(alternating(["m1", "m2"], 1, 1, 0), [c])
    with pytest.raises(WorkloadError, match="index 3"):
        run_workload([Request(at=0, max_tokens=1, prompt="x", target=3)], c)


def test_trace_csv_bad_rows_are_all_reported(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("arrival,prompt_len,output_len,model\n"
                 "0.0,16,8,\n"          # row 2: fine
                 "-1,16,8,\n"           # row 3: negative arrival
                 "0.5,abc,8,\n"         # row 4: prompt_len not a number
                 "0.7,16,0,\n"          # row 5: output_len < 1
                 "0.9,,8,\n"            # row 6: no prompt
                 "1.0,16,8,m,extra\n"   # row 7: too many fields
                 "1.1,16.5,8,\n")       # row 8: fractional length
    with pytest.raises(TraceError) as e:
        trace(p)
    rows = [row for row, _ in e.value.problems]
    assert rows == [3, 4, 5, 6, 7, 8]
    msg = str(e.value)
    assert "6 bad row(s); nothing was sent" in msg and "row 3: arrival time -1.0 is negative" in msg
    assert "row 4: prompt_len 'abc' is not a number" in msg and "row 6: prompt_len or prompt is missing" in msg
    assert isinstance(e.value, ValueError)


def test_trace_jsonl_bad_rows(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"arrival": 0, "prompt": "hi", "output_len": 4}\n'
                 "not json\n"
                 '[1, 2]\n'
                 '\n'
                 '{"arrival": 1, "prompt": "hi", "prompt_len": 3, "output_len": 4}\n'
                 '{"time": "x", "prompt_len": 3, "max_tokens": 4}\n')
    with pytest.raises(TraceError) as e:
        trace(p)
    assert [row for row, _ in e.value.problems] == [2, 3, 5, 6]
    assert "exactly one of prompt_len and prompt" in str(e.value)


def test_trace_csv_without_arrival_column(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("start,prompt_len,output_len\n0,1,1\n")
    with pytest.raises(TraceError, match="no arrival column"):
        trace(p)


def test_trace_good_file_sorted_and_scaled(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [
        {"arrival": 2.0, "prompt_len": 8, "output_len": 4, "model": "m"},
        {"arrival_time": 0.5, "prompt": "hello", "max_tokens": 2},
    ]))
    reqs = trace(p, time_scale=2.0).requests()
    assert [r.at for r in reqs] == [0.25, 1.0]
    assert reqs[0].prompt == "hello" and reqs[1].prompt_len == 8 and reqs[1].target == "m"
    with pytest.raises(WorkloadError, match="does not exist"):
        trace(tmp_path / "missing.csv")
    with pytest.raises(WorkloadError, match="time_scale"):
        trace(p, time_scale=0)
