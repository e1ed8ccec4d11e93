"""The pytest plugin on the docs' example project (docs/examples/chaos_project), run in a
fresh pytest process: the correct pipeline passes under chaos; each planted bug fails,
printing the seed and the command that replays it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

PROJECT = Path(__file__).resolve().parents[2] / "docs" / "examples" / "chaos_project"
SEED = 1


def _project(pytester: pytest.Pytester, *, replace: tuple[str, str] | None = None) -> None:
    pipeline = (PROJECT / "pipeline.py").read_text()
    if replace is not None:
        old, new = replace
        assert old in pipeline, f"the planted bug no longer applies: {old!r} is not in pipeline.py"
        pipeline = pipeline.replace(old, new)
    pytester.makepyfile(pipeline=pipeline, test_pipeline=(PROJECT / "test_pipeline.py").read_text())


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


def _summary(result: pytest.RunResult) -> dict[str, int]:
    line = next(line for line in result.outlines if line.startswith("robustpool chaos: "))
    injected = line.split("injected: ", 1)[1].split(";")[0]
    return {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", injected)}


def _fails_with_the_seed(result: pytest.RunResult, first: str, test: str) -> None:
    """One test failed, and its output shows ``first``, the seed and the replay command."""
    result.assert_outcomes(passed=1, failed=1)
    replay = f"  replay: pytest --robustpool-chaos={SEED} test_pipeline.py::{test}"
    result.stdout.fnmatch_lines([first, "robustpool chaos, seed *", replay])


def test_the_correct_pipeline_passes_under_chaos(pytester: pytest.Pytester) -> None:
    _project(pytester)
    result = _run(pytester, f"--robustpool-chaos={SEED}")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [f"robustpool chaos: seed {SEED}, 2 test(s) under chaos, * items, injected: *; 0 test(s) broke an invariant"]
    )
    assert sum(_summary(result).values()) > 0, "the run injected nothing: it proves nothing"


def test_a_cleanup_that_forgets_to_delete_fails_with_the_seed(pytester: pytest.Pytester) -> None:
    _project(pytester, replace=("    os.unlink(path)\n", "    pass  # planted bug: the file stays\n"))
    result = _run(pytester, f"--robustpool-chaos={SEED}")
    _fails_with_the_seed(result, "*robustpool chaos*", "test_stopping_early_leaves_only_the_files_kept")


def test_a_consumer_that_swallows_a_lost_worker_fails_with_the_seed(pytester: pytest.Pytester) -> None:
    planted = (
        '                for left in Path(out_dir).glob(f"item-{item}.*"):\n'
        "                    left.unlink(missing_ok=True)\n"
        "                outcomes[item] = err\n"
        "                continue\n",
        "                continue  # planted bug: the item is lost\n",
    )
    _project(pytester, replace=planted)
    result = _run(pytester, f"--robustpool-chaos={SEED}")
    _fails_with_the_seed(result, "*assert sorted(outcomes) == items*", "test_every_item_is_a_result_or_an_attributed_error")
    # Without chaos nothing dies, so the bug hides: that is what the plugin is for.
    _run(pytester, "-k", "every_item").assert_outcomes(passed=1)


def test_the_replay_command_replays_the_same_faults(pytester: pytest.Pytester) -> None:
    _project(pytester)
    node = "test_pipeline.py::test_every_item_is_a_result_or_an_attributed_error"
    first = _summary(_run(pytester, f"--robustpool-chaos={SEED}", node))
    again = _summary(_run(pytester, f"--robustpool-chaos={SEED}", node))
    assert first == again and first


def test_a_broken_invariant_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_leak="""
        import os
        from robustpool import RobustPool

        def test_leaves_a_descriptor_open(tmp_path):
            with RobustPool(1) as pool:
                assert pool.apply(abs, (-1,)) == 1
            test_leaves_a_descriptor_open.files = [open(tmp_path / str(k), "w") for k in range(5)]
        """
    )
    result = _run(pytester, "--robustpool-chaos=2")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*1 broken invariant(s):*", "*more file descriptors in the owner*", "*; 1 test(s) broke an invariant"]
    )


def test_marker_and_fixture_turn_chaos_on_for_one_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_one="""
        import pytest
        from robustpool import RobustPool

        def sq(x):
            return x * x

        @pytest.mark.robustpool_chaos(seed=3, kill=0.5, segfault=0, exit=0, delay=0)
        def test_marked(robustpool_chaos):
            with RobustPool(2, retries=3) as pool:
                assert pool.map(sq, range(40)) == [x * x for x in range(40)]
            assert robustpool_chaos.items == 40

        def test_plain():
            with RobustPool(2) as pool:
                assert pool.map(sq, range(40)) == [x * x for x in range(40)]
        """
    )
    result = _run(pytester)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["robustpool chaos: 1 test(s) under chaos, 40 items, injected: kill *; 0 test(s) broke an invariant"]
    )


def test_off_unless_asked_and_bad_rates_are_a_usage_error(pytester: pytest.Pytester) -> None:
    _project(pytester)
    quiet = _run(pytester, "-k", "every_item")  # the test without the marker
    quiet.assert_outcomes(passed=1)
    assert not [line for line in quiet.outlines if line.startswith("robustpool chaos: ")]
    bad = _run(pytester, "--robustpool-chaos=1", "--robustpool-chaos-rates=kill=lots")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*kill='lots' is not a number*"])
