// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Pausable} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Pausable.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {AccessControlDefaultAdminRules} from "@openzeppelin/contracts/access/extensions/AccessControlDefaultAdminRules.sol";
import {IAlliancePoints, IAllianceRegistry, ISettlement} from "./IAlliance.sol";

/// @title AlliancePoints (AP)
/// @notice The alliance's one points token. A brand mints AP when a member exchanges the brand's own
///         points, at the rate the registry has in force; a member spends AP at any brand by signing
///         an EIP-712 authorisation that the brand submits (and pays gas for), so members never need
///         ether. A brand may give back (part of) a redemption within `refundWindow`.
/// @dev Whole points only (0 decimals). The pause stops every movement of AP (ERC20Pausable's
///      `_update`: transfers, mints, burns) and cancellations.
///
///      Each redemption is recorded per (owner, brand id, nonce) with the amount it burned, so a
///      refund is bounded by what was burned, whatever else the member signed, and needs no signature
///      (a smart wallet that rotated its keys can still be refunded). Nonces are unordered: a member
///      may sign several authorisations at once and they may be submitted in any order.
///
///      Batch redemption skips an authorisation that would fail (with `RedemptionRejected`) instead
///      of reverting the batch: one member's stale or underfunded authorisation must not block the
///      others'. A gateway learns each one's outcome from `Redeemed` or `RedemptionRejected`.
contract AlliancePoints is IAlliancePoints, ERC20Pausable, EIP712, AccessControlDefaultAdminRules {
    bytes32 public constant GOVERNOR_ROLE = keccak256("GOVERNOR_ROLE");
    bytes32 public constant REDEEM_TYPEHASH =
        keccak256("Redeem(address owner,address brand,uint256 amount,uint256 nonce,uint256 deadline)");
    /// @notice Gas an ERC-1271 wallet may spend answering for a signature, so no wallet can make a
    ///         batch run out of gas.
    uint256 public constant ERC1271_GAS = 50_000;

    /// @notice A used nonce: what its redemption burned, how much of it was refunded, and when (the
    ///         shape `redemptionOf` answers in; stored packed, see `_records`).
    struct Record {
        uint96 amount;
        uint96 refunded;
        uint48 redeemedAt; // 0: not redeemed
        bool cancelled;
    }

    IAllianceRegistry public immutable registry;
    ISettlement public immutable settlement;
    /// @notice Seconds after a redemption during which the brand may refund it.
    uint64 public immutable refundWindow;

    /// @dev The records of a member's nonces 2k and 2k+1 at a brand share one slot, a 128-bit half
    ///      each: amount (48 bits) | refunded (48) | time (32). A cancelled nonce has a time and no
    ///      amount. A member who redeems at a brand again writes a slot already written, which costs
    ///      some 17,000 gas less than a fresh one.
    mapping(address owner => mapping(uint32 brandId => mapping(uint256 pair => uint256 halves))) private _records;

    /// @param governor Holder of the admin and governance roles.
    /// @param adminDelay Seconds a transfer of the admin role must wait before it can be accepted.
    /// @param refundWindow_ Seconds after a redemption during which it may be refunded.
    constructor(address governor, uint48 adminDelay, IAllianceRegistry registry_, ISettlement settlement_, uint64 refundWindow_)
        ERC20("Alliance Points", "AP")
        EIP712("AlliancePoints", "2")
        AccessControlDefaultAdminRules(adminDelay, governor)
    {
        if (address(registry_) == address(0) || address(settlement_) == address(0)) revert ZeroAddress();
        if (settlement_.points() != address(this) || address(settlement_.registry()) != address(registry_)) {
            revert SettlementNotBound(address(settlement_));
        }
        _grantRole(GOVERNOR_ROLE, governor);
        registry = registry_;
        settlement = settlement_;
        refundWindow = refundWindow_;
    }

    /// @notice AP are whole points.
    function decimals() public pure override returns (uint8) {
        return 0;
    }

    // ------------------------------------------------------------------ issue

    /// @notice Mint to a member the AP that `brandPoints` buy at the calling brand's rate, which must
    ///         be version `rateVersion` (the one the member was quoted) and divide `brandPoints`.
    function mint(address to, uint256 brandPoints, uint32 rateVersion, bytes32 ref) external {
        (uint32 id, uint64 rate) = registry.mintTerms(msg.sender, rateVersion);
        uint256 ap = _toAp(brandPoints, rate);
        _mint(to, ap);
        emit Issued(msg.sender, to, ref, ap, rateVersion);
        // slither-disable-next-line unused-return: the epoch it returns is not part of Issued
        settlement.recordIssue(id, ap);
    }

    /// @notice Mint to many members in one transaction at one rate version; the credit check runs
    ///         once on the total.
    function mintBatch(address[] calldata to, uint256[] calldata brandPoints, bytes32[] calldata refs, uint32 rateVersion)
        external
    {
        (uint32 id, uint64 rate) = registry.mintTerms(msg.sender, rateVersion);
        uint256 n = to.length;
        if (brandPoints.length != n || refs.length != n) revert LengthMismatch();
        if (n == 0) revert ZeroAmount();
        // slither-disable-next-line uninitialized-local: a sum that starts at zero
        uint256 total;
        for (uint256 i; i < n; ++i) {
            uint256 ap = _toAp(brandPoints[i], rate);
            _mint(to[i], ap);
            emit Issued(msg.sender, to[i], refs[i], ap, rateVersion);
            total += ap;
        }
        // slither-disable-next-line unused-return: the epoch it returns is not part of Issued
        settlement.recordIssue(id, total);
    }

    // ------------------------------------------------------------------ redeem

    /// @notice Burn a member's AP at the calling brand, on the member's signed authorisation.
    /// @dev Reverts on a wrong brand, an expired deadline, a nonce already used or cancelled, a
    ///      signature not by `r.owner` for this chain and contract (EIP-712 domain), or too few AP.
    function redeem(Redemption calldata r, bytes calldata signature) external {
        uint32 id = _activeId();
        bytes4 reason = _rejection(r, signature, id);
        if (reason != bytes4(0)) _revert(reason, r);
        // slither-disable-next-line reentrancy-no-eth: settlement is immutable, bound in the constructor, and calls nothing back
        uint64 epoch = settlement.recordRedemption(id, r.amount);
        _redeem(r, id, epoch);
    }

    /// @notice Redeem many members' authorisations in one transaction. One that would fail is
    ///         skipped with `RedemptionRejected` (its reason is the error `redeem` would revert with);
    ///         the rest go through, and the settlement records their total once.
    /// @return redeemed The AP burned in total.
    function redeemBatch(Redemption[] calldata rs, bytes[] calldata signatures) external returns (uint256 redeemed) {
        uint32 id = _activeId();
        uint256 n = rs.length;
        if (signatures.length != n) revert LengthMismatch();
        uint64 epoch = settlement.currentEpoch();
        for (uint256 i; i < n; ++i) {
            Redemption calldata r = rs[i];
            bytes4 reason = _rejection(r, signatures[i], id);
            if (reason != bytes4(0)) {
                emit RedemptionRejected(r.owner, msg.sender, r.nonce, reason);
                continue;
            }
            _redeem(r, id, epoch);
            redeemed += r.amount;
        }
        // slither-disable-next-line unused-return: the epoch was read before the loop, and nothing in between can close it
        if (redeemed != 0) settlement.recordRedemption(id, redeemed);
    }

    /// @notice Give back `amount` AP of the redemption (`owner`, `nonce`) at the calling brand,
    ///         within `refundWindow` of it, in total never more than it burned. The AP count as
    ///         issued by the brand in the open epoch (against its credit limit and collateral).
    function refund(address owner, uint256 nonce, uint256 amount) external {
        uint32 id = _activeId();
        if (amount == 0) revert ZeroAmount();
        uint256 entry = _entry(owner, id, nonce);
        (uint256 burned, uint256 refunded, uint256 redeemedAt) = _unpack(entry);
        if (burned == 0) revert NotRefundable(owner, msg.sender, nonce);
        if (block.timestamp > redeemedAt + refundWindow) revert RefundWindowClosed(redeemedAt, refundWindow);
        uint256 refundable = burned - refunded;
        if (amount > refundable) revert RefundTooLarge(amount, refundable);
        _setEntry(owner, id, nonce, entry + (amount << 32));
        _mint(owner, amount);
        uint64 epoch = settlement.recordIssue(id, amount);
        emit Refunded(owner, msg.sender, nonce, amount, epoch);
    }

    /// @notice A member withdraws an authorisation for `brand` they signed but no longer want used.
    function cancelAuthorization(address brand, uint256 nonce) external whenNotPaused {
        // slither-disable-next-line unused-return: a member may cancel at a suspended brand too: only admission (id != 0) matters
        (uint32 id,) = registry.brandOf(brand);
        if (id == 0) revert NotAdmitted(brand);
        if (_entry(msg.sender, id, nonce) != 0) revert NonceAlreadyUsed(msg.sender, brand, nonce);
        _setEntry(msg.sender, id, nonce, _now());
        emit AuthorizationCancelled(msg.sender, brand, nonce);
    }

    // ------------------------------------------------------------------ governance

    /// @notice Stop every movement of AP: transfers, mints, redemptions, refunds, cancellations (and,
    ///         through Settlement, epoch closes).
    function pause() external onlyRole(GOVERNOR_ROLE) {
        _pause();
    }

    /// @notice Resume after a pause.
    function unpause() external onlyRole(GOVERNOR_ROLE) {
        _unpause();
    }

    // ------------------------------------------------------------------ reads

    /// @inheritdoc IAlliancePoints
    function paused() public view override(IAlliancePoints, Pausable) returns (bool) {
        return super.paused();
    }

    /// @notice The EIP-712 digest a member signs for `r`.
    function redemptionDigest(Redemption calldata r) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(REDEEM_TYPEHASH, r.owner, r.brand, r.amount, r.nonce, r.deadline)));
    }

    /// @notice The record of nonce `nonce` of `owner` at the brand `brand` acts or acted for.
    function redemptionOf(address owner, address brand, uint256 nonce) external view returns (Record memory) {
        (uint256 burned, uint256 refunded, uint256 at) = _unpack(_entry(owner, registry.idOf(brand), nonce));
        if (burned == 0) return Record(0, 0, 0, at != 0);
        return Record(uint96(burned), uint96(refunded), uint48(at), false);
    }

    /// @notice True if the nonce was redeemed or cancelled (it can never be used again).
    function isNonceUsed(address owner, address brand, uint256 nonce) public view returns (bool) {
        return _entry(owner, registry.idOf(brand), nonce) != 0;
    }

    /// @notice Used nonces 256*word .. 256*word+255 as a bitmap, for wallets that pick a free nonce.
    function usedNonces(address owner, address brand, uint256 word) external view returns (uint256 bits) {
        uint32 id = registry.idOf(brand);
        for (uint256 i; i < 256; ++i) {
            if (_entry(owner, id, word * 256 + i) != 0) bits |= 1 << i;
        }
    }

    /// @notice The EIP-712 domain separator of this chain and contract.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ------------------------------------------------------------------ internals

    function _activeId() private view returns (uint32 id) {
        IAllianceRegistry.Status status;
        (id, status) = registry.brandOf(msg.sender);
        if (status != IAllianceRegistry.Status.Active) revert BrandNotActive(msg.sender);
    }

    function _toAp(uint256 brandPoints, uint64 rate) private pure returns (uint256 ap) {
        if (brandPoints % rate != 0) revert InexactExchange(brandPoints, rate);
        ap = brandPoints / rate;
        if (ap == 0) revert ZeroAmount();
    }

    /// @dev Why `r` cannot be redeemed now at the calling brand (the error's selector), or zero.
    function _rejection(Redemption calldata r, bytes calldata signature, uint32 id) private view returns (bytes4) {
        if (r.brand != msg.sender) return WrongBrand.selector;
        if (block.timestamp > r.deadline) return AuthorizationExpired.selector;
        if (r.amount == 0) return ZeroAmount.selector;
        if (r.amount > type(uint48).max) return AmountTooLarge.selector;
        if (_entry(r.owner, id, r.nonce) != 0) return NonceAlreadyUsed.selector;
        if (!_signedBy(r, signature)) return InvalidSignature.selector;
        if (balanceOf(r.owner) < r.amount) return InsufficientPoints.selector;
        return bytes4(0);
    }

    function _revert(bytes4 reason, Redemption calldata r) private view {
        if (reason == WrongBrand.selector) revert WrongBrand(r.brand, msg.sender);
        if (reason == AuthorizationExpired.selector) revert AuthorizationExpired(r.deadline, block.timestamp);
        if (reason == ZeroAmount.selector) revert ZeroAmount();
        if (reason == AmountTooLarge.selector) revert AmountTooLarge(r.amount);
        if (reason == NonceAlreadyUsed.selector) revert NonceAlreadyUsed(r.owner, r.brand, r.nonce);
        if (reason == InsufficientPoints.selector) revert InsufficientPoints(r.owner, balanceOf(r.owner), r.amount);
        revert InvalidSignature();
    }

    function _redeem(Redemption calldata r, uint32 id, uint64 epoch) private {
        _setEntry(r.owner, id, r.nonce, (r.amount << 80) | _now());
        _burn(r.owner, r.amount);
        emit Redeemed(r.owner, msg.sender, r.nonce, r.amount, epoch);
    }

    /// @dev The packed record of (`owner`, brand `id`, `nonce`); zero while the nonce is unused.
    function _entry(address owner, uint32 id, uint256 nonce) private view returns (uint256) {
        return uint128(_records[owner][id][nonce >> 1] >> ((nonce & 1) << 7));
    }

    /// @dev Replace the record of (`owner`, brand `id`, `nonce`), leaving its neighbour's half as it is.
    function _setEntry(address owner, uint32 id, uint256 nonce, uint256 entry) private {
        uint256 shift = (nonce & 1) << 7;
        uint256 halves = _records[owner][id][nonce >> 1];
        _records[owner][id][nonce >> 1] = (halves & ~(uint256(type(uint128).max) << shift)) | (entry << shift);
    }

    /// @dev A record's time: 32 bits last until 2106, and a later chain reverts rather than wraps.
    function _now() private view returns (uint256) {
        return SafeCast.toUint32(block.timestamp);
    }

    function _unpack(uint256 entry) private pure returns (uint256 burned, uint256 refunded, uint256 at) {
        return (entry >> 80, uint48(entry >> 32), uint32(entry));
    }

    function _signedBy(Redemption calldata r, bytes calldata signature) private view returns (bool) {
        bytes32 digest = redemptionDigest(r);
        // Member keys sign with ECDSA; try that first, since asking whether the owner is a contract
        // costs a cold account access. A contract's address has no key, so a recovered match is proof
        // enough; otherwise ask the owner as an ERC-1271 smart wallet, with capped gas.
        // slither-disable-next-line unused-return: the third value only details the error kind
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, signature);
        if (err == ECDSA.RecoverError.NoError && recovered == r.owner) return true;
        bytes memory query = abi.encodeCall(IERC1271.isValidSignature, (digest, signature));
        address owner = r.owner;
        bool ok;
        bytes32 answer;
        assembly ("memory-safe") {
            // Copies at most one word back, so no answer can flood memory.
            ok := staticcall(ERC1271_GAS, owner, add(query, 0x20), mload(query), 0x00, 0x20)
            ok := and(ok, gt(returndatasize(), 0x1f))
            answer := mload(0x00)
        }
        return ok && answer == bytes32(IERC1271.isValidSignature.selector);
    }
}
