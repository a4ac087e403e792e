"""Runs docs/study-note.md: every code block executes, in order, and prints what the document says it prints.

The document's conventions (stated at its top too):

* `````python`` blocks run in one namespace shared by the whole document, in document order, so later blocks
  use earlier names. A block whose lines start with ``>>> `` is a doctest: what each statement prints (or
  its repr) is compared with the lines under it. A block without prompts must print nothing: output that
  a reader is meant to see is shown under ``>>>``.
* `````console`` blocks: each ``$ cnnzoo ARGS`` line runs ``cnnzoo.cli.main(ARGS)`` in-process, stdout and
  stderr captured together, and what it prints is compared with the lines under it, up to the next ``$``.
  A command that fails (exit status not 0) must be shown with its ``error:`` line; one that succeeds must
  exit 0.
* The whole document runs in one fresh temporary working directory, so files it writes (run folders) land there.
* Comparison is exact except for two documented relaxations: trailing whitespace on each line and at the end
  is ignored, and ``...`` in the expected output matches any text (doctest's ELLIPSIS), used only for
  timings and for slices of long output.
* `````python no-run: REASON`` and `````console no-run: REASON`` blocks are for reading only (downloads, long
  training); each must give its reason, and :data:`NO_RUN_BLOCKS` pins how many there are, so that nothing
  slips out of the test silently. `````text`` blocks are prose. Any other kind of block fails the test.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "study-note.md"

NO_RUN_BLOCKS = 4  # reading-only blocks; change it only together with the document, and say why there

# The document's sections, in the order of the seed note's sections (Korean titles in each section's text).
SECTIONS = [
    "Why convolutions",
    "The filter operation",
    "Padding and stride",
    "Output size and the whole-division rule",
    "Pooling",
    "The convolution layer, low-level and with Keras",
    "LeNet-5",
    "VGGNet and the 3x3 argument",
    "GoogLeNet: the naive and the real Inception block",
    "InceptionV3 in Keras",
    "ResNet: the residual block",
    "ResNet-50 in Keras and in PyTorch, for 10 classes",
    "Training VGG on ImageNet",
    "Training ResNet-50 on a 10-class set",
]

# The seed's bugs, each quoted in the document where it is fixed.
SEED_BUGS = [
    "self.kernel_size = kernels_size",
    "def naive_inception_block(prev_layer, filter=[64, 128, 32])",
    "concatenate(conv1x1, conv3x3, conv5x5, max_pool)",
    "add[shortcut, residual]",
    "padding='same', strides=strides)(act_1)",
    "ResidualBlock(512, 128, 512, True)",
    "nn.AvgPool2d((2, 2), stride=0)",
    "(5 + 2\\times 2 - 4 + 1) = 6",
    "filters=N",
]

RUNNABLE = ("python", "doctest", "console")


@dataclass
class Block:
    kind: str  # python, doctest, console, no-run, text, or the unknown info string
    lineno: int  # of the opening fence, 1-based
    source: str
    section: str
    reason: str = ""

    @property
    def id(self) -> str:
        return f"L{self.lineno}-{self.kind}"


def _kind(info: str, source: str) -> tuple[str, str]:
    language, _, rest = info.partition(" ")
    if language in ("python", "console") and rest.startswith("no-run"):
        return "no-run", rest.removeprefix("no-run").lstrip(":").strip()
    if info == "python":
        return ("doctest" if re.search(r"^>>> ", source, re.M) else "python"), ""
    if info in ("console", "text"):
        return info, ""
    return info or "(no info string)", ""


def parse(text: str) -> tuple[list[Block], list[str]]:
    """The fenced blocks of a Markdown text, each with the ``## `` section it sits in, and the section titles."""
    blocks, sections = [], []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            sections.append(line[3:].strip())
        elif line.startswith("```"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```")
            source = "\n".join(lines[i + 1 : end]) + "\n"
            kind, reason = _kind(line[3:].strip(), source)
            blocks.append(Block(kind, i + 1, source, sections[-1] if sections else "", reason))
            i = end
        i += 1
    return blocks, sections


BLOCKS, HEADINGS = parse(DOC.read_text(encoding="utf-8"))


class Checker(doctest.OutputChecker):
    """doctest's checker with ELLIPSIS, blind to trailing whitespace: the document's two relaxations."""

    def check_output(self, want: str, got: str, optionflags: int) -> bool:
        return super().check_output(_strip(want), _strip(got), optionflags | doctest.ELLIPSIS)


def _strip(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.rstrip().splitlines()) + "\n"


@dataclass
class Document:
    """One namespace and one working directory for the whole document, and which blocks have run in it."""

    namespace: dict
    done: set


@pytest.fixture(scope="module")
def document(tmp_path_factory, one_thread):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("study-note"))
        yield Document({"__name__": "study_note"}, set())


def run_python(block: Block, namespace: dict) -> None:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block.source, f"{DOC.name}:{block.lineno}", "exec"), namespace)
    assert not printed.getvalue(), (
        f"{DOC.name}:{block.lineno}: a block without >>> prompts printed {printed.getvalue()!r}; "
        "show output under >>> prompts"
    )


def run_doctest(block: Block, namespace: dict) -> None:
    name = f"{DOC.name}:{block.lineno}"
    test = doctest.DocTestParser().get_doctest(block.source, namespace, name, str(DOC), block.lineno)
    report = io.StringIO()
    runner = doctest.DocTestRunner(checker=Checker(), optionflags=doctest.ELLIPSIS)
    result = runner.run(test, out=report.write, clear_globs=False)
    namespace.update(test.globs)  # a DocTest runs in a copy of the namespace: hand its names on
    assert result.attempted, f"{DOC.name}:{block.lineno}: no example found"
    if result.failed:
        pytest.fail(report.getvalue(), pytrace=False)


def console_commands(block: Block) -> list[tuple[int, list[str], str]]:
    """(line number, argv, expected output) for each ``$ cnnzoo ...`` line of a console block."""
    commands = []
    for offset, line in enumerate(block.source.splitlines(), start=block.lineno + 1):
        if line.startswith("$ "):
            argv = shlex.split(line[2:])
            assert argv[0] == "cnnzoo", f"{DOC.name}:{offset}: console blocks run cnnzoo commands only, got {line!r}"
            commands.append((offset, argv[1:], ""))
        else:
            assert commands, f"{DOC.name}:{offset}: output before any '$ cnnzoo' command"
            lineno, argv, expected = commands[-1]
            commands[-1] = (lineno, argv, expected + line + "\n")
    return commands


def run_console(block: Block) -> None:
    from cnnzoo.cli import main

    for lineno, argv, expected in console_commands(block):
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            try:
                status = main(argv)
            except SystemExit as e:  # argparse exits on bad usage
                status = e.code
        got = captured.getvalue()
        where = f"{DOC.name}:{lineno}: $ cnnzoo {shlex.join(argv)}"
        assert (status or 0) == 0 or "error:" in expected, f"{where} failed ({status}), not shown as an error:\n{got}"
        assert (status or 0) != 0 or "error:" not in expected, f"{where} exited 0 but is shown failing"
        if not Checker().check_output(expected, got, 0):
            pytest.fail(f"{where}\n--- expected ---\n{expected}--- got ---\n{got}", pytrace=False)


def run(block: Block, document: Document) -> None:
    if block.kind == "python":
        run_python(block, document.namespace)
    elif block.kind == "doctest":
        run_doctest(block, document.namespace)
    else:
        run_console(block)
    document.done.add(block.lineno)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind in RUNNABLE], ids=lambda b: b.id)
def test_block_runs_and_prints_what_the_document_says(block, document):
    # With -k only some blocks are selected: first run the earlier Python blocks whose names this one may use.
    for earlier in BLOCKS:
        if earlier.lineno >= block.lineno:
            break
        if earlier.kind in ("python", "doctest") and earlier.lineno not in document.done:
            run(earlier, document)
    run(block, document)


def test_every_block_is_of_a_known_kind():
    unknown = [f"line {b.lineno}: ```{b.kind}" for b in BLOCKS if b.kind not in (*RUNNABLE, "no-run", "text")]
    assert not unknown, "blocks must be python, python no-run: REASON, console, console no-run: REASON or text"


def test_reading_only_blocks_are_counted_and_say_why():
    no_run = [b for b in BLOCKS if b.kind == "no-run"]
    assert all(len(b.reason) > 15 for b in no_run), [b.lineno for b in no_run if len(b.reason) <= 15]
    assert len(no_run) == NO_RUN_BLOCKS, [f"line {b.lineno}: {b.reason}" for b in no_run]
    assert sum(b.kind in RUNNABLE for b in BLOCKS) > 4 * len(no_run)


def test_the_notes_sections_are_all_there_in_order_each_with_code_that_runs():
    assert HEADINGS == SECTIONS
    for section in SECTIONS:
        assert any(b.section == section and b.kind in RUNNABLE for b in BLOCKS), f"'{section}' has no block that runs"


def test_each_seed_bug_is_quoted_where_it_is_fixed():
    text = DOC.read_text(encoding="utf-8")
    assert not [bug for bug in SEED_BUGS if bug not in text]


def test_console_blocks_are_parsed_into_commands_and_outputs():
    """The parser itself, on a two-command block: outputs split at each '$' line, nothing lost."""
    block = Block("console", 10, "$ cnnzoo shape --size 5 --kernel 3\nH = 5\nOH = 3\n$ cnnzoo list --json\n[]\n", "")
    assert console_commands(block) == [
        (11, ["shape", "--size", "5", "--kernel", "3"], "H = 5\nOH = 3\n"),
        (14, ["list", "--json"], "[]\n"),
    ]
    assert Checker().check_output("a  1.5 s\n", "a  1.5 s   \n\n", 0)
    assert Checker().check_output("epoch 1 ... s\n", "epoch 1 0.2 s\n", 0)
    assert not Checker().check_output("OH = 3\n", "OH = 4\n", 0)
