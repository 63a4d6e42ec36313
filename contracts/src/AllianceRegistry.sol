// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControlDefaultAdminRules} from "@openzeppelin/contracts/access/extensions/AccessControlDefaultAdminRules.sol";
import {IAllianceRegistry} from "./IAlliance.sol";

/// @title AllianceRegistry
/// @notice Which brands belong to the alliance, the account each acts through, whether it may act,
///         and the rate at which its own points convert into alliance points (AP).
/// @dev Rates change only after a notice period, because members must see a new rate before it
///      applies to them; AlliancePoints mints at the rate in force, so the notice holds on chain.
///      Every published rate gets a new version, even one that replaces a pending rate, so a version
///      names exactly one rate. Shortening the notice itself takes the old notice to take effect.
contract AllianceRegistry is IAllianceRegistry, AccessControlDefaultAdminRules {
    bytes32 public constant GOVERNOR_ROLE = keccak256("GOVERNOR_ROLE");

    /// @notice Shortest notice governance may set for a rate change.
    uint64 public constant MIN_RATE_NOTICE = 1 days;

    /// @dev Slot 0 holds the account and rate version; slot 1 everything else the rate reads.
    struct Brand {
        address account;
        uint32 rateVersion; // version of `rate`
        uint48 admittedAt;
        uint64 rate; // brand points per AP, in force since version `rateVersion`
        uint64 nextRate; // published rate, 0 if none
        uint48 nextRateAt; // when nextRate takes effect
        uint32 nextVersion; // version of nextRate
        string name;
    }

    mapping(uint32 id => Brand) private _brands;
    /// @dev What an account is: its brand's id (permanent: a rotated-out account keeps it, so
    ///      history stays attributable and the account can never be admitted again) and the brand's
    ///      status while the account is current (None once rotated out). One slot, because every
    ///      mint and redemption asks `brandOf`.
    struct Seat {
        uint32 id;
        Status status;
    }

    mapping(address account => Seat) private _seats;
    uint32 private _count;

    uint64 private _notice;
    uint64 private _nextNotice;
    uint48 private _nextNoticeAt;

    /// @param governor Holder of the admin and governance roles (in production a multisig or
    ///        timelock of the founding brands).
    /// @param adminDelay Seconds a transfer of the admin role must wait before it can be accepted.
    /// @param notice Initial rate notice period in seconds.
    constructor(address governor, uint48 adminDelay, uint64 notice) AccessControlDefaultAdminRules(adminDelay, governor) {
        if (notice < MIN_RATE_NOTICE) revert NoticeTooShort(notice, MIN_RATE_NOTICE);
        _grantRole(GOVERNOR_ROLE, governor);
        _notice = notice;
        emit RateNoticeScheduled(0, notice, uint64(block.timestamp));
    }

    // ------------------------------------------------------------------ governance

    /// @notice Admit a brand acting through `account`. Its first rate takes effect at once (version
    ///         1): nobody holds its points under an older rate yet.
    /// @return id The brand's permanent id.
    function admit(address account, string calldata name, uint64 rate) external onlyRole(GOVERNOR_ROLE) returns (uint32 id) {
        if (account == address(0)) revert ZeroAddress();
        if (rate == 0) revert InvalidRate();
        if (_seats[account].id != 0) revert AlreadyAdmitted(account);
        id = ++_count;
        _seats[account] = Seat(id, Status.Active);
        Brand storage b = _brands[id];
        b.account = account;
        b.rateVersion = 1;
        b.admittedAt = uint48(block.timestamp);
        b.rate = rate;
        b.name = name;
        emit BrandAdmitted(id, account, name, rate);
        emit RateScheduled(id, account, 1, rate, uint64(block.timestamp));
    }

    /// @notice Stop a brand from minting, redeeming, refunding and withdrawing. It keeps its
    ///         collateral and settlement record and still settles at every epoch close.
    function suspend(address account, string calldata reason) external onlyRole(GOVERNOR_ROLE) {
        Seat storage seat = _seat(account);
        if (seat.status != Status.Active) revert BrandNotActive(account);
        seat.status = Status.Suspended;
        uint32 id = seat.id;
        emit BrandSuspended(id, account, reason);
    }

    /// @notice Let a suspended brand act again.
    function reinstate(address account) external onlyRole(GOVERNOR_ROLE) {
        Seat storage seat = _seat(account);
        if (seat.status != Status.Suspended) revert BrandNotSuspended(account);
        seat.status = Status.Active;
        uint32 id = seat.id;
        emit BrandReinstated(id, account);
    }

    /// @notice Move a brand to a new account (its gateway key was compromised or replaced). The
    ///         brand keeps its id, status, collateral, settlement record, member nonces and anchors;
    ///         the old account can do nothing more, and authorisations signed for it are void.
    function rotate(address previous, address account) external onlyRole(GOVERNOR_ROLE) {
        if (account == address(0)) revert ZeroAddress();
        if (_seats[account].id != 0) revert AlreadyAdmitted(account);
        Seat storage old = _seat(previous);
        uint32 id = old.id;
        _seats[account] = Seat(id, old.status);
        old.status = Status.None;
        _brands[id].account = account;
        emit BrandRotated(id, previous, account);
    }

    /// @notice Publish a new rate for a brand, effective after the notice period, under a new
    ///         version (a rate published while another is pending replaces it with the next version).
    function scheduleRate(address account, uint64 rate) external onlyRole(GOVERNOR_ROLE) {
        if (rate == 0) revert InvalidRate();
        (uint32 id, Brand storage b) = _current(account);
        _applyDueRate(b);
        uint32 version = (b.nextRate != 0 ? b.nextVersion : b.rateVersion) + 1;
        uint48 effectiveAt = uint48(block.timestamp + rateNotice());
        b.nextRate = rate;
        b.nextRateAt = effectiveAt;
        b.nextVersion = version;
        emit RateScheduled(id, account, version, rate, effectiveAt);
    }

    /// @notice Change the rate notice. A longer notice applies at once; a shorter one only once the
    ///         current notice has passed, so a rate published now still gets today's notice.
    function setRateNotice(uint64 notice) external onlyRole(GOVERNOR_ROLE) {
        if (notice < MIN_RATE_NOTICE) revert NoticeTooShort(notice, MIN_RATE_NOTICE);
        uint64 current = rateNotice();
        if (notice >= current) {
            (_notice, _nextNotice, _nextNoticeAt) = (notice, 0, 0);
            emit RateNoticeScheduled(current, notice, uint64(block.timestamp));
        } else {
            uint48 effectiveAt = uint48(block.timestamp + current);
            (_notice, _nextNotice, _nextNoticeAt) = (current, notice, effectiveAt);
            emit RateNoticeScheduled(current, notice, effectiveAt);
        }
    }

    // ------------------------------------------------------------------ reads

    /// @notice Notice period, in seconds, between publishing a rate and its taking effect.
    function rateNotice() public view returns (uint64) {
        return _nextNoticeAt != 0 && block.timestamp >= _nextNoticeAt ? _nextNotice : _notice;
    }

    /// @notice A shorter notice published but not yet in force: (notice, effectiveAt), or zeros.
    function pendingRateNotice() external view returns (uint64 notice, uint64 effectiveAt) {
        // slither-disable-next-line incorrect-equality: zero means no shorter notice is pending; the time itself is compared with >=
        if (_nextNoticeAt == 0 || block.timestamp >= _nextNoticeAt) return (0, 0);
        return (_nextNotice, _nextNoticeAt);
    }

    /// @inheritdoc IAllianceRegistry
    function brandOf(address account) public view returns (uint32 id, Status status) {
        Seat memory seat = _seats[account];
        if (seat.status == Status.None) return (0, Status.None);
        return (seat.id, seat.status);
    }

    /// @inheritdoc IAllianceRegistry
    function idOf(address account) external view returns (uint32) {
        return _seats[account].id;
    }

    /// @inheritdoc IAllianceRegistry
    function accountOf(uint32 id) external view returns (address) {
        return _brands[id].account;
    }

    /// @inheritdoc IAllianceRegistry
    function mintTerms(address account, uint32 rateVersion) external view returns (uint32 id, uint64 rate) {
        Status status;
        (id, status) = brandOf(account);
        if (status != Status.Active) revert BrandNotActive(account);
        uint32 version;
        (rate, version) = _rate(_brands[id]);
        if (version != rateVersion) revert RateVersionMismatch(rateVersion, version);
    }

    /// @notice True for the current account of an active brand.
    function isActive(address account) external view returns (bool) {
        (, Status status) = brandOf(account);
        return status == Status.Active;
    }

    /// @notice True for the current account of an active or suspended brand: both still settle,
    ///         deposit and post anchors.
    function isAdmitted(address account) external view returns (bool) {
        (, Status status) = brandOf(account);
        return status != Status.None;
    }

    /// @notice The status of the brand `account` acts for (None if unknown or rotated out).
    function statusOf(address account) external view returns (Status status) {
        (, status) = brandOf(account);
    }

    /// @notice The rate in force now (brand points per AP) and its version.
    function rateOf(address account) external view returns (uint64 rate, uint32 version) {
        (, Brand storage b) = _current(account);
        return _rate(b);
    }

    /// @notice A rate published but not yet in force: (rate, version, effectiveAt), or zeros.
    function pendingRateOf(address account) external view returns (uint64 rate, uint32 version, uint64 effectiveAt) {
        (, Brand storage b) = _current(account);
        if (b.nextRate == 0 || block.timestamp >= b.nextRateAt) return (0, 0, 0);
        return (b.nextRate, b.nextVersion, b.nextRateAt);
    }

    /// @notice Everything about the brand `account` acts for now.
    function brandInfo(address account)
        external
        view
        returns (uint32 id, string memory name, Status status, uint64 admittedAt, uint64 rate, uint32 rateVersion)
    {
        Brand storage b;
        (id, b) = _current(account);
        (rate, rateVersion) = _rate(b);
        return (id, b.name, _seats[account].status, b.admittedAt, rate, rateVersion);
    }

    /// @notice Number of brands ever admitted (ids run from 1 to this).
    function brandCount() external view returns (uint256) {
        return _count;
    }

    /// @notice The current accounts of all brands ever admitted, by id.
    function brands() external view returns (address[] memory accounts) {
        accounts = new address[](_count);
        for (uint32 i; i < _count; ++i) {
            accounts[i] = _brands[i + 1].account;
        }
    }

    // ------------------------------------------------------------------ internals

    function _current(address account) private view returns (uint32 id, Brand storage b) {
        id = _seat(account).id;
        b = _brands[id];
    }

    /// @dev The seat of a current account.
    function _seat(address account) private view returns (Seat storage seat) {
        seat = _seats[account];
        if (seat.status == Status.None) revert UnknownBrand(account);
    }

    function _rate(Brand storage b) private view returns (uint64, uint32) {
        if (b.nextRate != 0 && block.timestamp >= b.nextRateAt) return (b.nextRate, b.nextVersion);
        return (b.rate, b.rateVersion);
    }

    /// @dev Fold a published rate that has come into force into the current one.
    function _applyDueRate(Brand storage b) private {
        if (b.nextRate != 0 && block.timestamp >= b.nextRateAt) {
            (b.rate, b.rateVersion) = (b.nextRate, b.nextVersion);
            (b.nextRate, b.nextRateAt, b.nextVersion) = (0, 0, 0);
        }
    }
}
