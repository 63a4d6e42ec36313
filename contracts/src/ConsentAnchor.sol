// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAllianceRegistry, IConsentAnchor} from "./IAlliance.sol";

/// @title ConsentAnchor
/// @notice Brands post the Merkle root of one of their append-only logs (consent log, audit log,
///         model releases) per period. Anyone can read a root and check a receipt's inclusion proof
///         against it without trusting the brand.
/// @dev Append-only as far as a contract can tell: a period is posted once, periods only move forward
///      (by at most MAX_PERIOD_JUMP, so no period near 2^64 can lock a log), sizes never shrink, and
///      the same size must carry the same root. Whether a larger tree extends the previous one is
///      not checkable from roots alone: verifiers check an RFC 9162 consistency proof between
///      consecutive anchors (the alliance's audit does, from the brand's log).
///      Anchors belong to the brand's id, so they survive a rotation of its account.
///      Only roots and counts are stored: nothing personal, no pseudonym, ever goes on chain.
contract ConsentAnchor is IConsentAnchor {
    bytes32 public constant CONSENT_LOG = "consent-log";
    bytes32 public constant AUDIT_LOG = "audit-log";
    bytes32 public constant MODEL_RELEASES = "model-releases";
    /// @notice Largest step between consecutive periods of one log (and the largest first period).
    uint64 public constant MAX_PERIOD_JUMP = 2 ** 16;

    struct Anchor {
        bytes32 root; // RFC 9162 Merkle tree head of the log's first `size` entries
        uint64 size; // number of entries the root covers (the whole log so far)
        uint64 postedAt;
        uint64 blockNumber;
    }

    IAllianceRegistry public immutable registry;

    mapping(uint32 brandId => mapping(bytes32 kind => mapping(uint64 period => Anchor))) private _anchors;
    mapping(uint32 brandId => mapping(bytes32 kind => uint64 period)) private _latest;

    constructor(IAllianceRegistry registry_) {
        if (address(registry_) == address(0)) revert ZeroAddress();
        registry = registry_;
    }

    /// @notice Post the root of the calling brand's `kind` log for `period` (active or suspended
    ///         brands: a suspension must not stop the evidence).
    function post(bytes32 kind, uint64 period, uint64 size, bytes32 root) external {
        (uint32 id, IAllianceRegistry.Status status) = registry.brandOf(msg.sender);
        if (status == IAllianceRegistry.Status.None) revert NotAdmitted(msg.sender);
        if (root == bytes32(0)) revert EmptyRoot();
        uint64 latest = _latest[id][kind];
        if (period <= latest) revert PeriodNotAfterLatest(period, latest);
        if (period - latest > MAX_PERIOD_JUMP) revert PeriodJumpTooLarge(period, latest, MAX_PERIOD_JUMP);
        if (latest != 0) {
            Anchor storage head = _anchors[id][kind][latest];
            if (size < head.size) revert LogShrank(size, head.size);
            if (size == head.size && root != head.root) revert RootConflict(size, root, head.root);
        }
        _anchors[id][kind][period] = Anchor(root, size, uint64(block.timestamp), uint64(block.number));
        _latest[id][kind] = period;
        emit Anchored(msg.sender, kind, period, size, root);
    }

    /// @notice The anchor of a brand's `kind` log at `period` (by its current or any former
    ///         account); reverts with NoAnchor if none was posted.
    function anchorOf(address brand, bytes32 kind, uint64 period) external view returns (Anchor memory a) {
        a = _anchors[registry.idOf(brand)][kind][period];
        if (a.root == bytes32(0)) revert NoAnchor(brand, kind, period);
    }

    /// @notice The most recent anchor of a brand's log, if any.
    function latestOf(address brand, bytes32 kind) external view returns (bool exists, uint64 period, Anchor memory a) {
        uint32 id = registry.idOf(brand);
        period = _latest[id][kind];
        if (period == 0) return (false, 0, a);
        return (true, period, _anchors[id][kind][period]);
    }

    /// @notice True if `root` is the anchored root of the brand's `kind` log at `period`.
    function isAnchored(address brand, bytes32 kind, uint64 period, bytes32 root) external view returns (bool) {
        return root != bytes32(0) && _anchors[registry.idOf(brand)][kind][period].root == root;
    }
}
