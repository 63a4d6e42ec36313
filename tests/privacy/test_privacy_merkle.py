"""Merkle trees: RFC 6962 reference vectors, corruption probes, and properties over random trees.

Reference values: the certificate-transparency test data as published in
transparency-dev/merkle (proof/verify_test.go, testonly/constants.go), which
carries over the original google/certificate-transparency vectors.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.errors import MerkleError
from privacy.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    merkle_root_from_hashes,
    node_hash,
    verify_consistency,
    verify_inclusion,
)


def h(x: str) -> bytes:
    return bytes.fromhex(x)


LEAVES = [
    h(""),
    h("00"),
    h("10"),
    h("2021"),
    h("3031"),
    h("40414243"),
    h("5051525354555657"),
    h("606162636465666768696a6b6c6d6e6f"),
]
ROOTS = [  # root of the first n leaves, n = 1..8
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]
# (0-based leaf index, tree size, audit path)
INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (2, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        1,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]
# (old size, new size, proof)
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]
SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")


def test_empty_tree_and_leaf_hash() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert merkle_root([]) == EMPTY_ROOT == MerkleTree().root()
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest() == ROOTS[0]
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()


@pytest.mark.parametrize("n", range(1, 9))
def test_rfc6962_roots(n: int) -> None:
    assert merkle_root(LEAVES[:n]) == ROOTS[n - 1]
    assert MerkleTree(LEAVES).root(n) == ROOTS[n - 1]
    assert MerkleTree(LEAVES[:n]).root() == ROOTS[n - 1]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_rfc6962_inclusion_proofs(index: int, size: int, path: list[bytes]) -> None:
    assert MerkleTree(LEAVES).inclusion_proof(index, size) == path
    assert inclusion_proof(LEAVES[:size], index) == path
    assert verify_inclusion(LEAVES[index], index, size, path, ROOTS[size - 1])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_rfc6962_consistency_proofs(old: int, new: int, proof: list[bytes]) -> None:
    assert MerkleTree(LEAVES).consistency_proof(old, new) == proof
    assert consistency_proof(LEAVES[:new], old) == proof
    assert verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], proof)


def _inclusion_probes(index: int, size: int, path: list[bytes], root: bytes, leaf: bytes):  # type: ignore[no-untyped-def]
    """The corruptions transparency-dev/merkle applies to every reference proof."""
    probes = [
        (leaf, index - 1, size, path, root),
        (leaf, index + 1, size, path, root),
        (leaf, index ^ 2, size, path, root),
        (leaf, index, size * 2, path, root),
        (leaf, index, size // 2, path, root),
        (b"WrongLeaf", index, size, path, root),
        (leaf, index, size, path, EMPTY_ROOT),
        (leaf, index, size, path, SOME_HASH),
        (leaf, index, size, path + [b""], root),
        (leaf, index, size, path + [root], root),
        (leaf, index, size, [b""] + path, root),
        (leaf, index, size, [root] + path, root),
    ]
    for i in range(len(path)):
        flipped = list(path)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes.append((leaf, index, size, flipped, root))
    if path:
        probes.append((leaf, index, size, path[:-1], root))
    if len(path) > 1:
        probes.append((leaf, index, size, [path[0], SOME_HASH] + path[1:], root))
    return probes


@pytest.mark.parametrize(("index", "size", "path"), [v for v in INCLUSION if v[2]])
def test_rfc6962_inclusion_corruptions_fail(index: int, size: int, path: list[bytes]) -> None:
    for probe in _inclusion_probes(index, size, path, ROOTS[size - 1], LEAVES[index]):
        assert not verify_inclusion(*probe), probe[1:3]


@pytest.mark.parametrize(("old", "new", "proof"), [v for v in CONSISTENCY if v[2]])
def test_rfc6962_consistency_corruptions_fail(old: int, new: int, proof: list[bytes]) -> None:
    r1, r2 = ROOTS[old - 1], ROOTS[new - 1]
    probes = [
        (old - 1, new, r1, r2, proof),
        (old + 1, new, r1, r2, proof),
        (old ^ 2, new, r1, r2, proof),
        (old, new * 2, r1, r2, proof),
        (old, new // 2, r1, r2, proof),
        (old, new, SOME_HASH, r2, proof),
        (old, new, r1, SOME_HASH, proof),
        (old, new, r2, r1, proof),
        (old, new, r1, r2, []),
        (old, new, r1, r2, proof + [b""]),
        (old, new, r1, r2, proof + [r1]),
        (old, new, r1, r2, proof + [r2]),
        (old, new, r1, r2, [b""] + proof),
        (old, new, r1, r2, [r1] + proof),
        (old, new, r1, r2, [r2] + proof),
        (old, new, r1, r2, [proof[0]] + proof),
        (old, new, r1, r2, proof[:-1]),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((old, new, r1, r2, flipped))
    for probe in probes:
        assert not verify_consistency(*probe), probe[:2]


def test_consistency_edge_cases() -> None:
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(0, 5, EMPTY_ROOT, ROOTS[4], [])
    assert not verify_consistency(0, 5, SOME_HASH, ROOTS[4], [])  # the empty tree has one root
    assert not verify_consistency(0, 1, EMPTY_ROOT, ROOTS[0], [EMPTY_ROOT])
    assert verify_consistency(3, 3, ROOTS[2], ROOTS[2], [])
    assert not verify_consistency(3, 3, ROOTS[2], ROOTS[2], [EMPTY_ROOT])
    assert not verify_consistency(3, 3, ROOTS[2], ROOTS[3], [])
    assert not verify_consistency(2, 1, ROOTS[1], ROOTS[0], [])
    assert not verify_consistency(1, 2, ROOTS[0], ROOTS[1], [])


def test_inclusion_edge_cases() -> None:
    root = ROOTS[0]
    assert verify_inclusion(LEAVES[0], 0, 1, [], root)
    for index, size in [(0, 0), (1, 0), (1, 1), (2, 1), (-1, 1)]:
        assert not verify_inclusion(LEAVES[0], index, size, [], root)
    assert not verify_inclusion(LEAVES[0], 0, 1, [], b"")
    with pytest.raises(MerkleError):
        verify_inclusion("text", 0, 1, [], root)  # type: ignore[arg-type]
    with pytest.raises(MerkleError):
        verify_inclusion(LEAVES[0], 0.0, 1, [], root)  # type: ignore[arg-type]
    with pytest.raises(MerkleError):
        verify_consistency(1, True, root, root, [])  # type: ignore[arg-type]


def test_argument_errors() -> None:
    tree = MerkleTree(LEAVES)
    for bad in (-1, 8, True):
        with pytest.raises(MerkleError):
            tree.inclusion_proof(bad)  # type: ignore[arg-type]
    with pytest.raises(MerkleError):
        tree.inclusion_proof(0, 9)
    with pytest.raises(MerkleError):
        tree.consistency_proof(9)
    with pytest.raises(MerkleError):
        tree.consistency_proof(5, 4)
    with pytest.raises(MerkleError):
        MerkleTree(["not bytes"])  # type: ignore[list-item]
    with pytest.raises(MerkleError):
        MerkleTree.from_leaf_hashes([b"short"])


# -- properties over random trees --------------------------------------------

leaf_lists = st.lists(st.binary(max_size=12), min_size=1, max_size=40)


@given(leaf_lists)
@settings(max_examples=40, deadline=None)
def test_every_index_proves_and_every_corruption_fails(leaves: list[bytes]) -> None:
    tree = MerkleTree(leaves)
    n, root = len(leaves), tree.root()
    assert root == merkle_root(leaves)
    for i, leaf in enumerate(leaves):
        proof = tree.inclusion_proof(i)
        assert verify_inclusion(leaf, i, n, proof, root)
        assert not verify_inclusion(leaf + b"\x00", i, n, proof, root)  # wrong leaf
        for j in range(n):  # every wrong index
            if j != i and leaves[j] != leaf:
                assert not verify_inclusion(leaf, j, n, proof, root), (i, j)
        for k in range(len(proof)):  # every single flipped sibling
            bad = list(proof)
            bad[k] = bad[k][:-1] + bytes([bad[k][-1] ^ 0x01])
            assert not verify_inclusion(leaf, i, n, bad, root), (i, k)


@given(leaf_lists, st.data())
@settings(max_examples=40, deadline=None)
def test_wrong_leaf_with_the_right_proof_fails(leaves: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    other = data.draw(st.binary(max_size=12).filter(lambda b: b != leaves[i]))
    assert not verify_inclusion(other, i, len(leaves), tree.inclusion_proof(i), tree.root())


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=48))
@settings(max_examples=40, deadline=None)
def test_appending_matches_bulk_build_at_every_size(leaves: list[bytes]) -> None:
    grown = MerkleTree()
    for i, leaf in enumerate(leaves):
        assert grown.append(leaf) == i
        assert grown.root() == merkle_root(leaves[: i + 1])
    bulk = MerkleTree(leaves)
    assert grown._levels == bulk._levels
    assert MerkleTree.from_leaf_hashes([leaf_hash(x) for x in leaves]).root() == bulk.root()
    assert merkle_root_from_hashes([leaf_hash(x) for x in leaves]) == bulk.root()


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=40), st.data())
@settings(max_examples=60, deadline=None)
def test_consistency_across_random_growth(leaves: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree(leaves)
    new = data.draw(st.integers(1, len(leaves)))
    old = data.draw(st.integers(0, new))
    proof = tree.consistency_proof(old, new)
    assert verify_consistency(old, new, tree.root(old), tree.root(new), proof)
    # Older-size inclusion proofs come from the same tree.
    i = data.draw(st.integers(0, new - 1))
    assert verify_inclusion(leaves[i], i, new, tree.inclusion_proof(i, new), tree.root(new))


@given(st.lists(st.binary(max_size=8), min_size=2, max_size=40), st.data())
@settings(max_examples=60, deadline=None)
def test_rewriting_an_old_leaf_breaks_consistency(leaves: list[bytes], data: st.DataObject) -> None:
    old = data.draw(st.integers(1, len(leaves) - 1))
    j = data.draw(st.integers(0, old - 1))
    honest = MerkleTree(leaves)
    old_root = honest.root(old)
    rewritten = list(leaves)
    rewritten[j] = leaves[j] + b"!"
    forged = MerkleTree(rewritten)
    n = len(leaves)
    assert not verify_consistency(old, n, old_root, forged.root(), forged.consistency_proof(old))
    assert not verify_consistency(old, n, old_root, forged.root(), honest.consistency_proof(old))
    assert verify_consistency(old, n, old_root, honest.root(), honest.consistency_proof(old))
