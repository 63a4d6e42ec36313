// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title AllianceRegistry
/// @notice Which brands belong to the alliance, whether they may act, and the rate at which each
///         brand's own points convert into alliance points (AP).
/// @dev A brand is identified by its gateway's account: the address that signs the brand's
///      transactions. Rates change only after a notice period, because members must be able to see a
///      new rate before it applies to them (a ratio changed without notice drives members away).
contract AllianceRegistry is AccessControl {
    bytes32 public constant GOVERNOR_ROLE = keccak256("GOVERNOR_ROLE");

    /// @notice Shortest notice governance may set for a rate change.
    uint64 public constant MIN_RATE_NOTICE = 1 days;

    enum Status {
        None,
        Active,
        Suspended
    }

    /// @dev Slot 0 holds everything the hot path (isActive) and rateOf read.
    struct Brand {
        Status status;
        uint64 admittedAt;
        uint32 rateVersion; // version of `rate`
        uint96 rate; // brand points per alliance point, in force since version `rateVersion`
        uint96 nextRate; // scheduled rate (version rateVersion + 1), 0 if none
        uint64 nextRateAt; // when nextRate takes effect
        string name;
    }

    mapping(address brand => Brand) private _brands;
    address[] private _brandList;

    /// @notice Notice period, in seconds, between publishing a rate and its taking effect.
    uint64 public rateNotice;

    event BrandAdmitted(address indexed brand, string name, uint96 rate);
    event BrandSuspended(address indexed brand, string reason);
    event BrandReinstated(address indexed brand);
    event RateScheduled(address indexed brand, uint32 indexed version, uint96 rate, uint64 effectiveAt);
    event RateNoticeChanged(uint64 previousNotice, uint64 newNotice);

    error ZeroAddress();
    error InvalidRate();
    error NoticeTooShort(uint64 notice, uint64 minimum);
    error AlreadyAdmitted(address brand);
    error UnknownBrand(address brand);
    error BrandNotActive(address brand);
    error BrandNotSuspended(address brand);

    /// @param governor Holder of the governance role (in production a multisig or timelock of the
    ///        founding brands).
    /// @param notice Initial rate notice period in seconds.
    constructor(address governor, uint64 notice) {
        if (governor == address(0)) revert ZeroAddress();
        if (notice < MIN_RATE_NOTICE) revert NoticeTooShort(notice, MIN_RATE_NOTICE);
        _grantRole(DEFAULT_ADMIN_ROLE, governor);
        _grantRole(GOVERNOR_ROLE, governor);
        rateNotice = notice;
        emit RateNoticeChanged(0, notice);
    }

    // ------------------------------------------------------------------ governance

    /// @notice Admit a brand. Its first rate takes effect at once (version 1): nobody holds its
    ///         points under an older rate yet.
    function admit(address brand, string calldata name, uint96 rate) external onlyRole(GOVERNOR_ROLE) {
        if (brand == address(0)) revert ZeroAddress();
        if (rate == 0) revert InvalidRate();
        Brand storage b = _brands[brand];
        if (b.status != Status.None) revert AlreadyAdmitted(brand);
        b.status = Status.Active;
        b.admittedAt = uint64(block.timestamp);
        b.rateVersion = 1;
        b.rate = rate;
        b.name = name;
        _brandList.push(brand);
        emit BrandAdmitted(brand, name, rate);
        emit RateScheduled(brand, 1, rate, uint64(block.timestamp));
    }

    /// @notice Stop a brand from minting and redeeming. It keeps its collateral and its settlement
    ///         record, and still settles at the next epoch close.
    function suspend(address brand, string calldata reason) external onlyRole(GOVERNOR_ROLE) {
        Brand storage b = _brands[brand];
        if (b.status != Status.Active) revert BrandNotActive(brand);
        b.status = Status.Suspended;
        emit BrandSuspended(brand, reason);
    }

    function reinstate(address brand) external onlyRole(GOVERNOR_ROLE) {
        Brand storage b = _brands[brand];
        if (b.status != Status.Suspended) revert BrandNotSuspended(brand);
        b.status = Status.Active;
        emit BrandReinstated(brand);
    }

    /// @notice Publish a new rate for a brand, effective after the notice period. A rate published
    ///         while another is still pending replaces it (same version number).
    function scheduleRate(address brand, uint96 rate) external onlyRole(GOVERNOR_ROLE) {
        if (rate == 0) revert InvalidRate();
        Brand storage b = _brands[brand];
        if (b.status == Status.None) revert UnknownBrand(brand);
        _applyDueRate(b);
        uint64 effectiveAt = uint64(block.timestamp) + rateNotice;
        b.nextRate = rate;
        b.nextRateAt = effectiveAt;
        emit RateScheduled(brand, b.rateVersion + 1, rate, effectiveAt);
    }

    function setRateNotice(uint64 notice) external onlyRole(GOVERNOR_ROLE) {
        if (notice < MIN_RATE_NOTICE) revert NoticeTooShort(notice, MIN_RATE_NOTICE);
        emit RateNoticeChanged(rateNotice, notice);
        rateNotice = notice;
    }

    // ------------------------------------------------------------------ reads

    function isActive(address brand) external view returns (bool) {
        return _brands[brand].status == Status.Active;
    }

    /// @notice True for active and suspended brands: both still settle, post anchors and refund.
    function isAdmitted(address brand) external view returns (bool) {
        return _brands[brand].status != Status.None;
    }

    function statusOf(address brand) external view returns (Status) {
        return _brands[brand].status;
    }

    /// @notice The rate in force now and its version.
    function rateOf(address brand) public view returns (uint96 rate, uint32 version) {
        Brand storage b = _brands[brand];
        if (b.status == Status.None) revert UnknownBrand(brand);
        if (b.nextRate != 0 && block.timestamp >= b.nextRateAt) return (b.nextRate, b.rateVersion + 1);
        return (b.rate, b.rateVersion);
    }

    /// @notice A rate published but not yet in force, if any.
    function pendingRateOf(address brand) external view returns (uint96 rate, uint32 version, uint64 effectiveAt) {
        Brand storage b = _brands[brand];
        if (b.status == Status.None) revert UnknownBrand(brand);
        if (b.nextRate == 0 || block.timestamp >= b.nextRateAt) return (0, 0, 0);
        return (b.nextRate, b.rateVersion + 1, b.nextRateAt);
    }

    function brandInfo(address brand)
        external
        view
        returns (string memory name, Status status, uint64 admittedAt, uint96 rate, uint32 rateVersion)
    {
        Brand storage b = _brands[brand];
        if (b.status == Status.None) revert UnknownBrand(brand);
        (rate, rateVersion) = rateOf(brand);
        return (b.name, b.status, b.admittedAt, rate, rateVersion);
    }

    function brandCount() external view returns (uint256) {
        return _brandList.length;
    }

    function brandAt(uint256 index) external view returns (address) {
        return _brandList[index];
    }

    function brands() external view returns (address[] memory) {
        return _brandList;
    }

    // ------------------------------------------------------------------ internals

    /// @dev Fold a scheduled rate that has come into force into the current one.
    function _applyDueRate(Brand storage b) private {
        if (b.nextRate != 0 && block.timestamp >= b.nextRateAt) {
            b.rate = b.nextRate;
            b.rateVersion += 1;
            b.nextRate = 0;
            b.nextRateAt = 0;
        }
    }
}
