"""The node table's bounded fd cache: eviction, reopening by file handle, pinning.

Real inodes on the backing filesystem of the test's tmp directory (the
oracle: (st_dev, st_ino) of what a reopened fd refers to).  Reopening by
handle needs CAP_DAC_READ_SEARCH, so these run as root.
"""
from __future__ import annotations

import errno
import os

import pytest

from fdsl.runtime.nodes import FdBudget, NodeTable
from fdsl.runtime.sysio import name_to_handle

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="open_by_handle_at needs root")

OPATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


@pytest.fixture
def tree(tmp_path):
    try:
        fd = os.open(tmp_path, OPATH)
        name_to_handle(fd)
        os.close(fd)
    except OSError as err:
        pytest.skip(f"the tmp filesystem exports no file handles: {err}")
    for i in range(40):
        (tmp_path / f"f{i}").write_text(str(i))
    return tmp_path


def table_with_root(path, cache: int) -> NodeTable:
    table = NodeTable(budget=FdBudget(limit=1024, reserve=64, node_cache=cache, max_handles=64))
    table.add_root(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), None, None)
    return table


def attach(table: NodeTable, root, name: str):
    fd = os.open(name, OPATH, dir_fd=root.fd)
    return table.attach(fd, os.fstat(fd), None, None)


def test_more_nodes_than_cached_fds_all_reopen_to_their_own_inode(tree):
    table = table_with_root(tree, cache=8)
    root = table.get(1)
    nodes = [attach(table, root, f"f{i}") for i in range(40)]
    assert len(table) == 41
    assert len(table.cached) == 8
    assert table.open_fds() <= 8 + 1 + 1        # cache + root + one mount fd
    for i, node in enumerate(nodes):
        with table.operation():
            st = os.fstat(node.fd)
        assert (st.st_dev, st.st_ino) == node.key
        assert os.stat(tree / f"f{i}").st_ino == st.st_ino
    assert table.reopened >= 32
    table.close_all()


def test_fds_taken_by_an_operation_stay_open_until_it_ends(tree):
    table = table_with_root(tree, cache=2)
    root = table.get(1)
    nodes = [attach(table, root, f"f{i}") for i in range(6)]
    with table.operation():
        held = {n.nodeid: n.fd for n in nodes[:4]}    # more pins than the cache holds
        for n in nodes[4:]:
            n.fd
        for node in nodes[:4]:                        # nothing pinned was closed or reused
            assert node.fd == held[node.nodeid]
            assert (os.fstat(held[node.nodeid]).st_ino) == node.key[1]
    assert len(table.cached) == 2                      # evicted once the operation ended
    table.close_all()


def test_forget_of_a_node_in_use_closes_its_fd_after_the_operation(tree):
    table = table_with_root(tree, cache=4)
    node = attach(table, table.get(1), "f0")
    with table.operation():
        fd = node.fd
        table.forget(node.nodeid, 1)
        assert os.fstat(fd).st_ino == node.key[1]     # still valid inside the operation
    with pytest.raises(OSError) as gone:
        os.fstat(fd)
    assert gone.value.errno == errno.EBADF
    with pytest.raises(OSError) as stale:
        table.get(node.nodeid)
    assert stale.value.errno == errno.ESTALE
    table.close_all()


def test_budget_leaves_a_reserve():
    for limit in (64, 256, 1024, 1 << 20):
        b = FdBudget.for_limit(limit)
        assert b.node_cache + b.max_handles + b.reserve <= limit
        assert b.reserve == min(256, limit // 4)
        assert 16 <= b.node_cache <= 16384 and b.max_handles >= 16


def test_a_new_inode_with_a_deleted_nodes_inode_number_gets_its_own_node(tree):
    """An evicted node does not keep its inode alive: the backing fs may give the
    number to a new file (same st_ino, other generation).  That file must not be
    taken for the old node, whose handle is stale (ESTALE for every operation)."""
    table = table_with_root(tree, cache=1)
    root = table.get(1)
    old = attach(table, root, "f0")
    attach(table, root, "f1")                   # evicts f0's fd
    assert old._fd < 0
    os.unlink(tree / "f0")
    for i in range(200):
        (tree / f"new{i}").write_text("new")
        if os.stat(tree / f"new{i}").st_ino == old.key[1]:
            break
    else:
        pytest.skip("not applicable here: the filesystem did not reuse the inode number in 200 tries")
    new = attach(table, root, f"new{i}")
    assert new is not old and new.key == old.key
    with table.operation():
        assert os.fstat(new.fd).st_ino == old.key[1]
        with pytest.raises(OSError) as stale:
            old.fd
    assert stale.value.errno == errno.ESTALE
    table.forget(old.nodeid, 1)                 # the old node's FORGET leaves the new one
    assert table.find_key(new.key) is new
    table.close_all()
