// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AllianceRegistry} from "./AllianceRegistry.sol";

/// @title ConsentAnchor
/// @notice Brands post the Merkle root of one of their append-only logs (consent log, audit log,
///         model releases) per period. Anyone can read a root and check a receipt's inclusion proof
///         against it without trusting the brand: a posted period can never be overwritten, periods
///         only move forward and a log's size never shrinks.
/// @dev Only roots and counts are stored: nothing personal, no pseudonym, ever goes on chain.
contract ConsentAnchor {
    bytes32 public constant CONSENT_LOG = "consent-log";
    bytes32 public constant AUDIT_LOG = "audit-log";
    bytes32 public constant MODEL_RELEASES = "model-releases";

    struct Anchor {
        bytes32 root; // RFC 9162 Merkle tree head of the log's first `size` entries
        uint64 size; // number of entries the root covers (the whole log so far)
        uint64 postedAt;
        uint64 blockNumber;
    }

    struct Head {
        uint64 period;
        uint64 size;
        bool exists;
    }

    AllianceRegistry public immutable registry;

    mapping(address brand => mapping(bytes32 kind => mapping(uint64 period => Anchor))) private _anchors;
    mapping(address brand => mapping(bytes32 kind => Head)) private _heads;

    event Anchored(address indexed brand, bytes32 indexed kind, uint64 indexed period, uint64 size, bytes32 root);

    error NotAdmitted(address brand);
    error EmptyRoot();
    error AlreadyAnchored(address brand, bytes32 kind, uint64 period);
    error PeriodNotAfterLatest(uint64 period, uint64 latest);
    error LogShrank(uint64 size, uint64 latestSize);
    error NoAnchor(address brand, bytes32 kind, uint64 period);

    constructor(AllianceRegistry registry_) {
        registry = registry_;
    }

    /// @notice Post the root of the calling brand's `kind` log for `period`.
    function post(bytes32 kind, uint64 period, uint64 size, bytes32 root) external {
        if (!registry.isAdmitted(msg.sender)) revert NotAdmitted(msg.sender);
        if (root == bytes32(0)) revert EmptyRoot();
        Anchor storage a = _anchors[msg.sender][kind][period];
        if (a.root != bytes32(0)) revert AlreadyAnchored(msg.sender, kind, period);
        Head storage h = _heads[msg.sender][kind];
        if (h.exists) {
            if (period <= h.period) revert PeriodNotAfterLatest(period, h.period);
            if (size < h.size) revert LogShrank(size, h.size);
        }
        a.root = root;
        a.size = size;
        a.postedAt = uint64(block.timestamp);
        a.blockNumber = uint64(block.number);
        _heads[msg.sender][kind] = Head(period, size, true);
        emit Anchored(msg.sender, kind, period, size, root);
    }

    function anchorOf(address brand, bytes32 kind, uint64 period) external view returns (Anchor memory a) {
        a = _anchors[brand][kind][period];
        if (a.root == bytes32(0)) revert NoAnchor(brand, kind, period);
    }

    /// @notice The most recent anchor of a brand's log, if any.
    function latestOf(address brand, bytes32 kind) external view returns (bool exists, uint64 period, Anchor memory a) {
        Head memory h = _heads[brand][kind];
        if (!h.exists) return (false, 0, a);
        return (true, h.period, _anchors[brand][kind][h.period]);
    }

    function isAnchored(address brand, bytes32 kind, uint64 period, bytes32 root) external view returns (bool) {
        return root != bytes32(0) && _anchors[brand][kind][period].root == root;
    }
}
