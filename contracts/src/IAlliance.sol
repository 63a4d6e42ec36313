// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Alliance interfaces
/// @notice What each alliance contract offers the others and the outside world, with every error and
///         event declared once (as OpenZeppelin's IERC6093 does for tokens).
/// @dev Brands are identified on chain by a permanent id (1, 2, ...) and act through one account at a
///      time: governance can rotate a compromised gateway key to a new account, which keeps the
///      brand's collateral, settlement record, nonces and anchors. Events name the brand by the account
///      that acted, and `BrandRotated` links the accounts of one brand.

/// @notice Errors shared by every alliance contract.
interface IAllianceErrors {
    /// @notice An address that must be set was zero.
    error ZeroAddress();
    /// @notice An amount that must be positive was zero.
    error ZeroAmount();
    /// @notice Parallel arrays of different lengths.
    error LengthMismatch();
    /// @notice `account` is not the current account of any admitted brand.
    error NotAdmitted(address account);
    /// @notice `account` is not the current account of an active brand.
    error BrandNotActive(address account);
}

/// @notice The alliance's members and their exchange rates.
interface IAllianceRegistry is IAllianceErrors {
    enum Status {
        None,
        Active,
        Suspended
    }

    /// @notice A brand was admitted with id `id`; its first rate is in force at once (version 1).
    event BrandAdmitted(uint32 indexed id, address indexed brand, string name, uint64 rate);
    /// @notice The brand may no longer mint, redeem, refund or withdraw; it still settles.
    event BrandSuspended(uint32 indexed id, address indexed brand, string reason);
    /// @notice A suspended brand may act again.
    event BrandReinstated(uint32 indexed id, address indexed brand);
    /// @notice Governance moved brand `id` from account `previous` to `account` (a compromised key).
    event BrandRotated(uint32 indexed id, address indexed previous, address indexed account);
    /// @notice Rate `version` of the brand (brand points per AP) takes effect at `effectiveAt`.
    event RateScheduled(uint32 indexed id, address indexed brand, uint32 indexed version, uint64 rate, uint64 effectiveAt);
    /// @notice The rate notice becomes `notice` seconds at `effectiveAt` (at once when it grows).
    event RateNoticeScheduled(uint64 previousNotice, uint64 notice, uint64 effectiveAt);

    error InvalidRate();
    error NoticeTooShort(uint64 notice, uint64 minimum);
    error AlreadyAdmitted(address account);
    error UnknownBrand(address account);
    error BrandNotSuspended(address account);
    error RateVersionMismatch(uint32 expected, uint32 current);

    /// @notice The brand an account acts for: its id and status (None for an unknown or rotated-out
    ///         account).
    function brandOf(address account) external view returns (uint32 id, Status status);

    /// @notice The id of the brand an account acts or once acted for (0 if never).
    function idOf(address account) external view returns (uint32 id);

    /// @notice The account brand `id` acts through now (zero for an unknown id).
    function accountOf(uint32 id) external view returns (address account);

    /// @notice For a mint by `account`: its brand id and the rate in force (brand points per AP).
    ///         Reverts unless the brand is active and `rateVersion` is the version in force.
    function mintTerms(address account, uint32 rateVersion) external view returns (uint32 id, uint64 rate);
}

/// @notice The pool, the brands' collateral and the epoch netting.
interface ISettlement is IAllianceErrors {
    event CreditLimitSet(uint32 indexed id, address indexed brand, uint96 limit);
    event PayoutSet(uint32 indexed id, address indexed brand, address payout);
    event CollateralDeposited(address indexed brand, uint256 amount, uint256 collateral);
    /// @notice Collateral left the contract to `to` (the brand's payout address, or its account).
    event CollateralWithdrawn(address indexed brand, uint256 amount, uint256 collateral, address to);
    /// @notice One brand's settlement in a closed epoch. `issued` counts mints and refunds (both
    ///         create AP the brand backs); `netValue` > 0 was paid to the brand's collateral from the
    ///         pool, < 0 paid by the brand into the pool.
    event BrandSettled(
        uint64 indexed epoch, address indexed brand, uint256 issued, uint256 redeemed, int256 netValue, uint256 collateral
    );
    /// @notice An epoch closed; `pool` == `supply` * valuePerPoint.
    event EpochClosed(
        uint64 indexed epoch, uint64 openedAt, uint256 issued, uint256 redeemed, uint256 pool, uint256 supply
    );

    error OnlyPoints(address caller);
    error CreditLimitExceeded(address brand, uint256 openNetIssued, uint256 limit);
    error InsufficientCollateral(address brand, uint256 required, uint256 available);
    error EpochTooShort(uint256 openFor, uint256 minimum);
    error EarlyCloseNotAllowed(address caller, uint256 openFor, uint256 epochLength);
    error PointsPaused();
    error NoPayout(address brand);
    error BrandIsActive(address brand);
    error InvariantBroken(uint256 pool, uint256 expected);
    error WiringMismatch();

    /// @notice Record AP the brand created (a mint or a refund) and check its credit limit and cover.
    function recordIssue(uint32 id, uint256 amount) external returns (uint64 epoch);

    /// @notice Record AP redeemed at the brand.
    function recordRedemption(uint32 id, uint256 amount) external returns (uint64 epoch);

    function points() external view returns (address);

    /// @notice The open epoch's number.
    function currentEpoch() external view returns (uint64);

    function registry() external view returns (IAllianceRegistry);
}

/// @notice The alliance points token and its signed redemptions.
interface IAlliancePoints is IAllianceErrors {
    /// @notice A member's authorisation to redeem `amount` AP at the brand whose account is `brand`.
    struct Redemption {
        address owner;
        address brand;
        uint256 amount;
        uint256 nonce;
        uint256 deadline;
    }

    /// @notice AP minted by `brand` to `to` at rate version `rateVersion`; `ref` is the brand's own
    ///         reference (its exchange id), so ledger and chain reconcile one to one.
    event Issued(address indexed brand, address indexed to, bytes32 indexed ref, uint256 amount, uint32 rateVersion);
    /// @notice `owner`'s AP burned at `brand` on authorisation `nonce`, in settlement epoch `epoch`.
    event Redeemed(address indexed owner, address indexed brand, uint256 nonce, uint256 amount, uint64 epoch);
    /// @notice Part of a redemption given back to its owner, booked in the open epoch `epoch`.
    event Refunded(address indexed owner, address indexed brand, uint256 nonce, uint256 amount, uint64 epoch);
    /// @notice An authorisation in a batch was skipped; `reason` is the selector of the error a single
    ///         redemption would have reverted with.
    event RedemptionRejected(address indexed owner, address indexed brand, uint256 nonce, bytes4 reason);
    /// @notice The owner withdrew an authorisation before it was used.
    event AuthorizationCancelled(address indexed owner, address indexed brand, uint256 nonce);

    error WrongBrand(address expected, address caller);
    error AuthorizationExpired(uint256 deadline, uint256 nowTs);
    error InvalidSignature();
    error NonceAlreadyUsed(address owner, address brand, uint256 nonce);
    /// @notice A single redemption above 2^48 - 1 AP (its record keeps 48 bits).
    error AmountTooLarge(uint256 amount);
    error NotRefundable(address owner, address brand, uint256 nonce);
    error RefundWindowClosed(uint256 redeemedAt, uint256 window);
    error RefundTooLarge(uint256 amount, uint256 refundable);
    error InsufficientPoints(address owner, uint256 balance, uint256 amount);
    error SettlementNotBound(address settlement);
    error InexactExchange(uint256 brandPoints, uint64 rate);

    /// @notice True while governance has paused every movement of AP.
    function paused() external view returns (bool);
}

/// @notice Roots of the brands' append-only logs.
interface IConsentAnchor is IAllianceErrors {
    /// @notice `brand` anchored its `kind` log at `period`: `root` is the RFC 9162 tree head of its
    ///         first `size` entries.
    event Anchored(address indexed brand, bytes32 indexed kind, uint64 indexed period, uint64 size, bytes32 root);

    error EmptyRoot();
    error PeriodNotAfterLatest(uint64 period, uint64 latest);
    error PeriodJumpTooLarge(uint64 period, uint64 latest, uint64 maxJump);
    error LogShrank(uint64 size, uint64 latestSize);
    error RootConflict(uint64 size, bytes32 root, bytes32 anchored);
    error NoAnchor(address brand, bytes32 kind, uint64 period);
}
