import os

# Keras runs on the torch backend in the tests (must be set before keras is imported anywhere).
os.environ.setdefault("KERAS_BACKEND", "torch")

# `make test` runs the suite in two pytest-xdist workers on CI's two cores. Each worker, and every process
# a test starts (inheriting this environment), computes on one thread: two 2-thread OpenMP pools on two
# cores spin against each other and slow everything many-fold.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

import shutil  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Small forward passes are fastest on one thread, and do not stall when the machine is busy
    (2-thread OpenMP on a loaded 2-core machine slows them many-fold). Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Disk: a module-scoped fixture's folder (from tmp_path_factory) outlives its tests until the run ends, and the
# suite's add up to gigabytes; CI's disk is not large. When a module's tests have all passed, the folders made
# during it go with it (a failed module keeps them, for a look).
_modules_with_failures: set[str] = set()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        _modules_with_failures.add(item.nodeid.split("::")[0])
    return report


@pytest.fixture(scope="module", autouse=True)
def _module_folders_removed(request, tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    yield
    if request.node.nodeid.split("::")[0] in _modules_with_failures:
        return
    for path in set(base.iterdir()) - before:
        shutil.rmtree(path, ignore_errors=True)


# Scheduling: `--dist loadfile` hands whole files to the two workers in collection order, so a long file
# that sorts late (test_train.py) used to run alone at the end while the other worker idled. The files below
# go first (in the order measured best); the rest keep their order. Listing more of the longer files (16, down to 28 s)
# measured slower (740 and 789 s against 640-714 s): the heavy files, with their child processes, then all
# run at once on both workers.
LONG_FILES_FIRST = (  # seconds of test time on this project's 2-core machine (--durations=0, 2026-12-01)
    "test_train_resume.py",  # 185
    "test_train.py",  # 165
    "test_quantize.py",  # 106
    "test_export.py",  # 104
    "test_keras_weights.py",  # 62
    "test_ema.py",  # 61
    "test_classic.py",  # 51
    "test_augment.py",  # 53
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # sort is stable: the rest keep their order
