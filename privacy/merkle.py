"""RFC 9162 (= RFC 6962) Merkle tree hashing, inclusion and consistency proofs.

Used to anchor the consent log: a brand posts the root of its log on chain, and
an auditor checks any receipt with an inclusion proof against that root, and
that a later root extends an earlier one with a consistency proof.

Definitions (RFC 9162 §2.1.1)::

    MTH({})      = SHA-256()
    MTH({d0})    = SHA-256(0x00 || d0)
    MTH(D[n])    = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))   k = largest power of 2 < n

Building level by level and carrying an unpaired last node up unchanged gives
exactly this tree, which is how the bulk paths below stay fast.  This is plain
hashing with ``hashlib``; it is checked against the RFC 6962 reference vectors
in the tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Final

from privacy.errors import MerkleError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleTree",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "leaf_hashes",
    "merkle_root",
    "merkle_root_from_hashes",
    "node_hash",
    "verify_consistency",
    "verify_inclusion",
    "verify_inclusion_hash",
]

HASH_SIZE: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256


def leaf_hash(leaf: bytes) -> bytes:
    """``SHA-256(0x00 || leaf)``."""
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def leaf_hashes(leaves: Iterable[bytes]) -> list[bytes]:
    """Leaf hashes of many leaves in one pass."""
    sha = _sha256
    try:
        return [sha(b"\x00" + leaf).digest() for leaf in leaves]
    except TypeError:
        raise MerkleError("leaves must be bytes") from None


def _pair_up(level: Sequence[bytes]) -> list[bytes]:
    """Parents of each complete pair; an unpaired last node is left out."""
    sha = _sha256
    return [sha(b"\x01" + a + b).digest() for a, b in zip(level[0::2], level[1::2], strict=False)]


def merkle_root_from_hashes(hashes: Sequence[bytes]) -> bytes:
    """Root of the tree whose leaf hashes are ``hashes``."""
    level = list(hashes)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        parents = _pair_up(level)
        if len(level) & 1:
            parents.append(level[-1])
        level = parents
    return level[0]


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 9162 Merkle tree hash of ``leaves`` (raw leaf data, not hashes)."""
    return merkle_root_from_hashes(leaf_hashes(leaves))


def _split(n: int) -> int:
    """Largest power of two strictly less than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """A log's Merkle tree that keeps every complete subtree hash.

    ``levels[h][i]`` is the hash of leaves ``[i*2**h, (i+1)*2**h)``; only
    complete subtrees are stored, so appending never rewrites a node, and the
    root, proofs and consistency proofs for any earlier size are computed from
    O(log n) stored nodes.
    """

    __slots__ = ("_levels",)

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [leaf_hashes(leaves)]
        self._build_up()

    @classmethod
    def from_leaf_hashes(cls, hashes: Iterable[bytes]) -> MerkleTree:
        """A tree over leaves that were hashed already (e.g. stored leaf hashes)."""
        tree = cls.__new__(cls)
        level = list(hashes)
        if any(not isinstance(h, bytes) or len(h) != HASH_SIZE for h in level):
            raise MerkleError("leaf hashes must be 32-byte values")
        tree._levels = [level]
        tree._build_up()
        return tree

    def _build_up(self) -> None:
        levels = self._levels
        while len(levels[-1]) >= 2:
            levels.append(_pair_up(levels[-1]))

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._levels[0])

    def __len__(self) -> int:
        return self.size

    def append(self, leaf: bytes) -> int:
        """Add one leaf; return its index."""
        if not isinstance(leaf, (bytes, bytearray)):
            raise MerkleError("a leaf must be bytes")
        return self.append_hash(leaf_hash(bytes(leaf)))

    def append_hash(self, hashed_leaf: bytes) -> int:
        """Add one leaf given its leaf hash; return its index."""
        if not isinstance(hashed_leaf, bytes) or len(hashed_leaf) != HASH_SIZE:
            raise MerkleError("a leaf hash is 32 bytes")
        levels = self._levels
        levels[0].append(hashed_leaf)
        index = len(levels[0]) - 1
        h = 0
        # Each time the new node completes a pair, its parent becomes complete too.
        while index & 1:
            parent = node_hash(levels[h][index - 1], levels[h][index])
            h += 1
            if len(levels) == h:
                levels.append([])
            levels[h].append(parent)
            index >>= 1
        return len(levels[0]) - 1

    def leaf_hash(self, index: int) -> bytes:
        """Stored leaf hash at ``index``."""
        self._check_index(index, self.size)
        return self._levels[0][index]

    def _range(self, start: int, end: int) -> bytes:
        """MTH of leaves [start, end), 0 <= start < end <= size."""
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:
            h = n.bit_length() - 1
            return self._levels[h][start >> h]
        k = _split(n)
        return node_hash(self._range(start, start + k), self._range(start + k, end))

    def _size(self, tree_size: int | None) -> int:
        if tree_size is None:
            return self.size
        if isinstance(tree_size, bool) or not isinstance(tree_size, int) or not 0 <= tree_size <= self.size:
            raise MerkleError(f"tree_size must be between 0 and {self.size}")
        return tree_size

    @staticmethod
    def _check_index(index: int, size: int) -> None:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
            raise MerkleError(f"leaf index must be between 0 and {size - 1}")

    def root(self, tree_size: int | None = None) -> bytes:
        """Root of the first ``tree_size`` leaves (default: all)."""
        n = self._size(tree_size)
        return EMPTY_ROOT if n == 0 else self._range(0, n)

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.3.1 audit path of leaf ``index`` in the tree of ``tree_size`` leaves."""
        n = self._size(tree_size)
        self._check_index(index, n)
        path: list[bytes] = []
        start, end, m = 0, n, index
        while end - start > 1:
            k = _split(end - start)
            if m < k:
                path.append(self._range(start + k, end))
                end = start + k
            else:
                path.append(self._range(start, start + k))
                start += k
                m -= k
        path.reverse()  # collected root-down; the proof runs leaf-up
        return path

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.4.1 proof that the ``old_size`` tree is a prefix of the ``new_size`` tree."""
        n = self._size(new_size)
        if isinstance(old_size, bool) or not isinstance(old_size, int) or not 0 <= old_size <= n:
            raise MerkleError(f"old_size must be between 0 and {n}")
        if old_size == 0 or old_size == n:
            return []
        path: list[bytes] = []
        start, end, m, complete = 0, n, old_size, True
        while True:
            size = end - start
            if m == size:
                if not complete:
                    path.append(self._range(start, end))
                break
            k = _split(size)
            if m <= k:
                path.append(self._range(start + k, end))
                end = start + k
            else:
                path.append(self._range(start, start + k))
                start += k
                m -= k
                complete = False
        path.reverse()
        return path


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path for ``leaves[index]`` in the tree of all ``leaves``.

    Builds the tree each call; use :class:`MerkleTree` for many proofs.
    """
    return MerkleTree(leaves).inclusion_proof(index)


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """Consistency proof from the first ``old_size`` leaves to all of ``leaves``."""
    return MerkleTree(leaves).consistency_proof(old_size)


def _check_ints(*values: int) -> None:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise MerkleError("indices and sizes must be integers")


def _proof_ok(proof: Sequence[bytes]) -> bool:
    return all(type(p) is bytes and len(p) == HASH_SIZE for p in proof)


def verify_inclusion_hash(hashed_leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2 verification, given the leaf hash rather than the leaf."""
    _check_ints(index, tree_size)
    if not 0 <= index < tree_size or len(root) != HASH_SIZE or len(hashed_leaf) != HASH_SIZE:
        return False
    sha = _sha256
    fn, sn, r = index, tree_size - 1, hashed_leaf
    for p in proof:
        # Checked inline: a wrong-length element is a malformed proof, not a hash input.
        if sn == 0 or type(p) is not bytes or len(p) != HASH_SIZE:
            return False
        if fn & 1 or fn == sn:
            r = sha(b"\x01" + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = sha(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_inclusion(leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """True if ``proof`` shows ``leaf`` (raw data) is leaf ``index`` of the ``tree_size`` tree with ``root``."""
    if not isinstance(leaf, (bytes, bytearray)):
        raise MerkleError("leaf must be bytes")
    return verify_inclusion_hash(leaf_hash(bytes(leaf)), index, tree_size, proof, root)


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: True if the ``old_size`` tree with ``old_root`` is a prefix of the ``new_size`` tree.

    The empty tree is a prefix of every tree, but only under its own root
    (``SHA-256("")``) and with an empty proof.
    """
    _check_ints(old_size, new_size)
    if not 0 <= old_size <= new_size or not _proof_ok(proof):
        return False
    if len(old_root) != HASH_SIZE or len(new_root) != HASH_SIZE:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    sha = _sha256
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = sha(b"\x01" + c + fr).digest()
            sr = sha(b"\x01" + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = sha(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
