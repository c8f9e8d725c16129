"""Taps per path: the table of common outcomes agrees with driving the engine along each path.

Run with ``pytest -s tests/flows/test_paths.py`` to see the table (it is in the README).
"""

from __future__ import annotations

from flows import Choose, Confirm, Continue, Done, Input, TextInput, Toggle, is_question
from flows.paths import COMMON_PATHS, PathCount, format_table, path_table, sample_answer
from tests.factories import Client, intake_flow


class CountingClient(Client):
    """A scripted client that counts what the person does: taps, typed answers, screens."""

    def __init__(self) -> None:
        self.taps = 0
        self.typed = 0
        self.screens: list[str] = []
        super().__init__(lang="en")

    def send(self, inp: Input):  # type: ignore[no-untyped-def]
        node = self.state.node
        if isinstance(inp, Choose | Toggle | Done | Continue | Confirm):
            self.taps += 1
        if isinstance(inp, TextInput):
            self.typed += 1
        replies = super().send(inp)
        if not isinstance(inp, Toggle) and self.state.seq > 0 and node != self.state.node:
            self.screens.append(node)
        return replies


def drive(row: PathCount) -> CountingClient:
    c = CountingClient()
    plan = dict(row.answers)
    for _ in range(60):
        if c.state.finished:
            return c
        kind = c.flow.nodes[c.node].kind
        if kind == "info":
            c.cont()
        elif kind == "confirm":
            c.confirm()
        else:
            c.answer(plan[c.node])
    raise AssertionError(f"{row.name}: the path did not end")


def test_the_table_of_common_paths_matches_the_engine() -> None:
    flow = intake_flow()
    rows = path_table(flow)
    print("\n" + format_table(rows))  # noqa: T201 - the table is read with pytest -s
    assert [r.name for r in rows] == [name for name, _ in COMMON_PATHS], "every outcome reachable"
    for row in rows:
        c = drive(row)
        [draft] = c.saved
        assert draft.outcome == row.outcome, row.name
        assert dict(COMMON_PATHS)[row.name](draft), row.name
        assert (len(c.screens), c.taps, c.typed) == (row.screens, row.taps, row.typed), row.name
        assert row.questions == sum(1 for n in c.screens if is_question(flow.nodes[n]))
        assert [n for n, _ in row.answers] == [
            n for n in c.screens if flow.nodes[n].kind not in ("info", "confirm")
        ]


def test_no_path_with_one_changed_answer_is_cheaper_than_the_tables() -> None:
    """Brute force over one changed answer: none reaches an outcome cheaper than its row."""
    flow = intake_flow()
    rows = {r.name: r for r in path_table(flow)}
    defaults = {n: sample_answer(node) for n, node in flow.nodes.items()}
    tried = 0
    for node_id, node in flow.nodes.items():
        for option in getattr(node, "options", ()):
            answer = (option.id,) if node.kind == "checklist" else option.id
            if answer == defaults[node_id]:
                continue
            plan = {n: a for n, a in {**defaults, node_id: answer}.items() if a is not None}
            try:
                c = drive(PathCount("try", "OK", tuple(plan.items()), (), 0, 0, 0, 0))
            except (AssertionError, KeyError):
                continue  # no way to a saved request with this one change
            for draft in c.saved:
                tried += 1
                for name, test in COMMON_PATHS:
                    if test(draft):
                        assert c.taps + c.typed >= rows[name].taps + rows[name].typed, (
                            name,
                            node_id,
                            answer,
                        )
    assert tried > 10
