"""README's Reliability section states what the fuzz suites prove: the numbers are counted from their
parametrisation here, so a reader, corruption, option class or signal point added there must be told there."""

from __future__ import annotations

from pathlib import Path

import fuzzing
import test_fuzz_inputs
import test_fuzz_options
import test_fuzz_runs
import test_fuzz_signals

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_states_the_numbers_the_fuzz_suite_proves():
    readers = test_fuzz_inputs.READERS + test_fuzz_runs.READERS
    said = " ".join(README.split())
    assert f"{len(readers)} readers × {len(fuzzing.CORRUPTIONS)} corruptions = {len(fuzzing.cases(readers))} cases" in said
    assert f"UTF-16 for the {sum(r.text for r in readers)} text files" in said
    options = sum(len(o) for o in test_fuzz_options.COMMANDS.values())
    assert (f"{len(test_fuzz_options.CLASSES)} option classes" in said
            and f"the {options} options of {len(test_fuzz_options.COMMANDS)} commands" in said)
    assert f"CI draws {fuzzing.EXAMPLES} option sets" in said
    assert f"Signals at {len(test_fuzz_signals.POINTS)} points of a run" in said
