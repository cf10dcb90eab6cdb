"""``pyromem retrieval --resume``: a table stopped between rows keeps the rows it finished, and
ends as an uninterrupted table ends; rows measured with other settings are not taken."""

import json

import pytest
import torch

from pyromem.cli import main
from pyromem.experiments.retrieval import run_retrieval

SMALL = dict(
    dataset="digits",
    methods=["GMM", "NTM", "VAE-GMM"],
    corruptions=["clean", "noise-0.2"],
    memory_size=10,
    seeds=2,
    selection_seeds=1,
    vae_epochs=1,
    progress=False,
)


class CtrlCAtCell:
    """A progress log that raises ``KeyboardInterrupt``, as Ctrl-C does, when the table's
    cell ``cell`` (from 1) is done, and keeps every line."""

    def __init__(self, cell=None):
        self.cell, self.lines = cell, []

    def __call__(self, line):
        self.lines.append(line)
        if self.cell is not None and line.startswith(f"[{self.cell}/"):
            raise KeyboardInterrupt


def rows_measured(lines):
    """The methods whose cells a run measured, from its progress lines."""
    return {line.split("]")[1].split()[0] for line in lines if line.startswith("[")}


def test_a_table_interrupted_between_rows_resumes_as_the_uninterrupted_one(tmp_path):
    torch.manual_seed(0)  # as the command line seeds every run: the same initial VAE
    whole = run_retrieval(tmp_path / "whole", **SMALL)
    # stopped as VAE-GMM's first cell ends: GMM's and NTM's rows are done
    stopped = CtrlCAtCell(cell=5)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        run_retrieval(tmp_path / "resumed", log=stopped, **SMALL)
    saved = json.loads((tmp_path / "resumed" / "rows.json").read_text())
    assert list(saved["rows"]) == ["GMM", "NTM"]
    assert not (tmp_path / "resumed" / "results.json").exists()

    again = CtrlCAtCell()
    resumed = run_retrieval(tmp_path / "resumed", log=again, resume=True, **SMALL)
    assert rows_measured(again.lines) == {"VAE-GMM"}
    assert "GMM: its row is kept from the interrupted run" in again.lines
    assert "NTM: its row is kept from the interrupted run" in again.lines
    assert resumed["kept"] == ["GMM", "NTM"] and whole["kept"] == []
    for key in ("results", "hyperparameters", "threshold", "selection"):
        assert resumed[key] == json.loads(json.dumps(whole[key])), key
    # NTM, a trained reader, was trained again as before: the figure's reads are the same
    assert resumed["figure_retrievals"] == whole["figure_retrievals"]
    assert list(resumed["timing"]["per_method"]) == ["VAE-GMM"]


def test_rows_of_other_settings_are_run_again_and_a_new_run_is_refused_on_them(tmp_path, capsys):
    pixels = dict(SMALL, methods=["GMM", "Hopfield"])
    with pytest.raises(KeyboardInterrupt):
        run_retrieval(tmp_path, log=CtrlCAtCell(cell=3), **pixels)
    assert list(json.loads((tmp_path / "rows.json").read_text())["rows"]) == ["GMM"]
    # on the command line, a new run there would lose the finished rows: refused
    argv = ["retrieval", "--dataset", "digits", "--methods", "GMM", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"holds an interrupted run ({tmp_path / 'rows.json'}); pass --resume" in err
    # another number of seeds: GMM's row is measured again, and the line says why
    log = CtrlCAtCell()
    results = run_retrieval(tmp_path, log=log, resume=True, **dict(pixels, seeds=3))
    assert (
        f"resume: the rows in {tmp_path / 'rows.json'} were measured with other seeds; "
        "every row runs again" in log.lines
    )
    assert rows_measured(log.lines) == {"GMM", "Hopfield"} and results["kept"] == []
    assert len(results["results"]["GMM"]["clean"]["per_seed"]) == 3
    # a run without --resume starts afresh: the rows it finds are not taken
    fresh = run_retrieval(tmp_path, log=CtrlCAtCell(), **pixels)
    assert fresh["kept"] == []


@pytest.mark.parametrize(
    "argument, message",
    [
        (dict(on_row="rows.json"), "on_row: expected a callable or None, got str"),
        (dict(log=3), "log: expected a callable or None, got int"),
        (dict(finished=["GMM"]), "finished: expected a dict of on_row's records, got list"),
        (dict(finished={"GMM": {"results": {}}}), "finished: the row of 'GMM' lacks"),
        (dict(finished={"GMM": 3}), "finished: the row of 'GMM' lacks"),
    ],
)
def test_bad_row_arguments_are_refused_before_any_work(argument, message):
    from pyromem.retrieval import retrieval_table

    images = torch.rand(20, 1, 8, 8)
    with pytest.raises((TypeError, ValueError), match=message):
        retrieval_table(["GMM"], ["clean"], images, images, memory_size=5, seeds=1, **argument)


class CtrlCAtLine(CtrlCAtCell):
    """A progress log that raises ``KeyboardInterrupt`` on the line ``stop``, and keeps every
    line."""

    def __init__(self, stop=None):
        super().__init__()
        self.stop = stop

    def __call__(self, line):
        self.lines.append(line)
        if line == self.stop:
            raise KeyboardInterrupt


def test_a_capacity_sweep_interrupted_between_sizes_resumes_as_the_uninterrupted_one(tmp_path):
    sweep = dict(
        dataset="digits",
        capacity=True,
        capacity_methods=["GMM", "Hopfield"],
        capacity_sizes=[5, 10, 20],
        corruptions=["noise-0.2"],
        seeds=2,
        selection_seeds=1,
        progress=False,
    )
    whole = run_retrieval(tmp_path / "whole", **sweep)
    # stopped as N = 20 starts: N = 5 and 10 are done
    with pytest.raises(KeyboardInterrupt):
        run_retrieval(tmp_path / "resumed", log=CtrlCAtLine("capacity: N = 20"), **sweep)
    saved = json.loads((tmp_path / "resumed" / "rows.json").read_text())
    assert list(saved["rows"]) == ["5", "10"] and saved["settings"]["capacity"] is True

    again = CtrlCAtLine()
    resumed = run_retrieval(tmp_path / "resumed", log=again, resume=True, **sweep)
    assert "capacity: N = 5 is kept from the interrupted run" in again.lines
    assert "capacity: N = 10 is kept from the interrupted run" in again.lines
    assert "capacity: N = 20" in again.lines and "capacity: N = 5" not in again.lines
    assert resumed["capacity"]["kept"] == [5, 10] and whole["capacity"]["kept"] == []
    for key in ("results", "hyperparameters", "threshold", "sizes"):
        assert resumed["capacity"][key] == json.loads(json.dumps(whole["capacity"][key])), key
    # a table in the same folder does not take the sweep's sizes as its rows
    log = CtrlCAtLine()
    table = dict(sweep, capacity=False, methods=["GMM"], memory_size=5)
    for key in ("capacity_methods", "capacity_sizes"):
        table.pop(key)
    run_retrieval(tmp_path / "resumed", log=log, resume=True, **table)
    assert any("were measured with other capacity" in line for line in log.lines)


@pytest.mark.parametrize(
    "argument, message",
    [
        (dict(on_size="rows.json"), "on_size: expected a callable or None, got str"),
        (dict(finished=[5]), "finished: expected a dict of on_size's records, got list"),
        (dict(finished={"5": {"results": {}}}), r"finished: the size N = 5 lacks \['hyper"),
    ],
)
def test_bad_size_arguments_are_refused_before_any_work(argument, message):
    from pyromem.retrieval import capacity_sweep

    images = torch.rand(20, 1, 8, 8)
    with pytest.raises((TypeError, ValueError), match=message):
        capacity_sweep(["GMM"], images, images, sizes=[5], seeds=1, **argument)
