// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {AllianceRegistry} from "./AllianceRegistry.sol";

/// @title Settlement
/// @notice Holds the alliance pool and each brand's collateral in one settlement token, records
///         what every brand issues and redeems, and at each epoch close moves one net amount per
///         brand between its collateral and the pool.
/// @dev Money flow. A brand that mints AP owes `amount * valuePerPoint` to the pool; a brand where a
///      member redeems AP is owed the same from the pool. Within an epoch these obligations are only
///      recorded (and the issuer's collateral reserved); `closeEpoch` nets them per brand, so an
///      alliance of N brands settles in at most N movements instead of N*(N-1) bilateral ones.
///      Invariant after every close: pool == AP total supply * valuePerPoint.
///
///      Counters are cumulative and never reset, so the per-redemption hot path updates a slot that
///      is already non-zero (no fresh storage write), and a close compares them with the values
///      recorded at the previous close.
contract Settlement is AccessControl, ReentrancyGuard {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    bytes32 public constant GOVERNOR_ROLE = keccak256("GOVERNOR_ROLE");
    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");

    struct Account {
        uint128 collateral; // settlement-token units deposited and not yet moved to the pool
        uint128 creditLimit; // most AP a brand may have issued net within one open epoch
        uint128 issued; // cumulative AP minted by the brand
        uint128 redeemed; // cumulative AP redeemed at the brand, net of refunds
        uint128 settledIssued; // `issued` at the last close
        uint128 settledRedeemed; // `redeemed` at the last close
    }

    IERC20 public immutable settlementToken;
    AllianceRegistry public immutable registry;
    /// @notice Settlement-token units one alliance point is worth. Fixed for the life of the
    ///         alliance: a stable point value is what members trust.
    uint256 public immutable valuePerPoint;

    /// @notice The AlliancePoints contract: the only caller of the record functions. Immutable (the
    ///         deployer precomputes its address) so the hot path reads no storage to check it.
    address public immutable points;

    uint128 private _pool;
    uint64 private _epoch;
    uint64 private _epochOpenedAt;
    uint256 public totalCollateral;

    mapping(address brand => Account) private _accounts;

    event CreditLimitSet(address indexed brand, uint128 limit);
    event CollateralDeposited(address indexed brand, uint256 amount, uint256 collateral);
    event CollateralWithdrawn(address indexed brand, uint256 amount, uint256 collateral);
    /// @notice One brand's settlement in a closed epoch. `netValue` > 0: paid to the brand's
    ///         collateral from the pool; < 0: paid by the brand into the pool.
    event BrandSettled(
        uint64 indexed epoch, address indexed brand, uint256 issued, uint256 redeemed, int256 netValue, uint256 collateral
    );
    event EpochClosed(
        uint64 indexed epoch, uint64 openedAt, uint256 issued, uint256 redeemed, uint256 pool, uint256 supply
    );

    error ZeroAddress();
    error ZeroAmount();
    error OnlyPoints(address caller);
    error NotAdmitted(address brand);
    error CreditLimitExceeded(address brand, uint256 openNetIssued, uint256 limit);
    error InsufficientCollateral(address brand, uint256 required, uint256 available);
    error RefundExceedsEpochRedemptions(address brand, uint256 amount, uint256 redeemedInEpoch);
    error InvariantBroken(uint256 pool, uint256 expected);

    modifier onlyPoints() {
        if (msg.sender != points) revert OnlyPoints(msg.sender);
        _;
    }

    constructor(address governor, AllianceRegistry registry_, IERC20 token, address points_, uint256 valuePerPoint_) {
        if (
            governor == address(0) || address(registry_) == address(0) || address(token) == address(0)
                || points_ == address(0)
        ) revert ZeroAddress();
        if (valuePerPoint_ == 0) revert ZeroAmount();
        _grantRole(DEFAULT_ADMIN_ROLE, governor);
        _grantRole(GOVERNOR_ROLE, governor);
        _grantRole(SETTLER_ROLE, governor);
        registry = registry_;
        settlementToken = token;
        points = points_;
        valuePerPoint = valuePerPoint_;
        _epoch = 1;
        _epochOpenedAt = uint64(block.timestamp);
    }

    // ------------------------------------------------------------------ governance

    function setCreditLimit(address brand, uint128 limit) external onlyRole(GOVERNOR_ROLE) {
        if (!registry.isAdmitted(brand)) revert NotAdmitted(brand);
        _accounts[brand].creditLimit = limit;
        emit CreditLimitSet(brand, limit);
    }

    // ------------------------------------------------------------------ brands

    /// @notice Add collateral. The caller must have approved this contract on the settlement token.
    function deposit(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        if (!registry.isAdmitted(msg.sender)) revert NotAdmitted(msg.sender);
        Account storage a = _accounts[msg.sender];
        a.collateral += amount.toUint128();
        totalCollateral += amount;
        settlementToken.safeTransferFrom(msg.sender, address(this), amount);
        emit CollateralDeposited(msg.sender, amount, a.collateral);
    }

    /// @notice Take back collateral that backs nothing: what the brand's open-epoch net issuance
    ///         reserves stays. (Issuance of closed epochs has already moved to the pool.)
    function withdraw(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        Account storage a = _accounts[msg.sender];
        uint256 reserved = _openNetIssued(a) * valuePerPoint;
        uint256 free = a.collateral > reserved ? a.collateral - reserved : 0;
        if (amount > free) revert InsufficientCollateral(msg.sender, amount, free);
        a.collateral -= uint128(amount);
        totalCollateral -= amount;
        settlementToken.safeTransfer(msg.sender, amount);
        emit CollateralWithdrawn(msg.sender, amount, a.collateral);
    }

    // ------------------------------------------------------------------ called by AlliancePoints

    /// @notice Record an issue and check it against the brand's credit limit and collateral.
    function recordIssue(address brand, uint256 amount) external onlyPoints {
        Account storage a = _accounts[brand];
        a.issued += amount.toUint128();
        _checkCover(brand, a, true);
    }

    /// @return epoch The open epoch the redemption falls in.
    function recordRedemption(address brand, uint256 amount) external onlyPoints returns (uint64 epoch) {
        _accounts[brand].redeemed += amount.toUint128();
        return _epoch;
    }

    /// @notice Reverse part of a redemption made in the open epoch. The brand then owes as if it had
    ///         issued those points again, so its collateral must still cover its open position.
    /// @return epoch The open epoch.
    function recordRefund(address brand, uint256 amount) external onlyPoints returns (uint64 epoch) {
        Account storage a = _accounts[brand];
        uint256 redeemedInEpoch = a.redeemed - a.settledRedeemed;
        if (amount > redeemedInEpoch) revert RefundExceedsEpochRedemptions(brand, amount, redeemedInEpoch);
        a.redeemed -= uint128(amount);
        _checkCover(brand, a, false);
        return _epoch;
    }

    // ------------------------------------------------------------------ epoch close

    /// @notice Net every brand's open position against the pool and open the next epoch.
    function closeEpoch() external onlyRole(SETTLER_ROLE) nonReentrant {
        uint64 epoch = _epoch;
        uint256 pool = _pool;
        uint256 value = valuePerPoint;
        uint256 epochIssued;
        uint256 epochRedeemed;
        uint256 n = registry.brandCount();
        for (uint256 i; i < n; ++i) {
            address brand = registry.brandAt(i);
            Account storage a = _accounts[brand];
            uint256 issued = a.issued - a.settledIssued;
            uint256 redeemed = a.redeemed - a.settledRedeemed;
            if (issued == 0 && redeemed == 0) continue;
            a.settledIssued = a.issued;
            a.settledRedeemed = a.redeemed;
            // Cover was checked at every issue and refund, so the issuer's collateral never goes
            // negative here; checked arithmetic would revert the whole close if it did.
            uint256 collateral = a.collateral + redeemed * value - issued * value;
            a.collateral = collateral.toUint128();
            epochIssued += issued;
            epochRedeemed += redeemed;
            emit BrandSettled(epoch, brand, issued, redeemed, int256(redeemed * value) - int256(issued * value), collateral);
        }
        // Summed after the loop: a running pool could dip below zero part-way (a brand owed by the
        // pool listed before the issuer whose mints back it) and revert a valid close.
        pool = pool + epochIssued * value - epochRedeemed * value;
        uint256 supply = IERC20(points).totalSupply();
        if (pool != supply * value) revert InvariantBroken(pool, supply * value);
        totalCollateral = totalCollateral + epochRedeemed * value - epochIssued * value;
        _pool = pool.toUint128();
        emit EpochClosed(epoch, _epochOpenedAt, epochIssued, epochRedeemed, pool, supply);
        _epoch = epoch + 1;
        _epochOpenedAt = uint64(block.timestamp);
    }

    // ------------------------------------------------------------------ reads

    function currentEpoch() external view returns (uint64) {
        return _epoch;
    }

    function epochOpenedAt() external view returns (uint64) {
        return _epochOpenedAt;
    }

    /// @notice Settlement-token units backing the AP supply as of the last close.
    function poolBalance() external view returns (uint256) {
        return _pool;
    }

    function accountOf(address brand) external view returns (Account memory) {
        return _accounts[brand];
    }

    /// @notice The brand's open-epoch position: AP issued and redeemed since the last close, and the
    ///         collateral it may still withdraw.
    function openPosition(address brand) external view returns (uint256 issued, uint256 redeemed, uint256 freeCollateral) {
        Account storage a = _accounts[brand];
        issued = a.issued - a.settledIssued;
        redeemed = a.redeemed - a.settledRedeemed;
        uint256 reserved = _openNetIssued(a) * valuePerPoint;
        freeCollateral = a.collateral > reserved ? a.collateral - reserved : 0;
    }

    // ------------------------------------------------------------------ internals

    /// @dev AP issued minus AP redeemed at the brand since the last close, floored at zero.
    function _openNetIssued(Account storage a) private view returns (uint256) {
        uint256 issued = a.issued - a.settledIssued;
        uint256 redeemed = a.redeemed - a.settledRedeemed;
        return issued > redeemed ? issued - redeemed : 0;
    }

    function _checkCover(address brand, Account storage a, bool checkLimit) private view {
        uint256 net = _openNetIssued(a);
        if (checkLimit && net > a.creditLimit) revert CreditLimitExceeded(brand, net, a.creditLimit);
        uint256 required = net * valuePerPoint;
        if (required > a.collateral) revert InsufficientCollateral(brand, required, a.collateral);
    }
}
