// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControlDefaultAdminRules} from "@openzeppelin/contracts/access/extensions/AccessControlDefaultAdminRules.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IAlliancePoints, IAllianceRegistry, ISettlement} from "./IAlliance.sol";

/// @title Settlement
/// @notice Holds the alliance pool and each brand's collateral in one settlement token, records what
///         every brand issues and redeems, and at each epoch close moves one net amount per brand
///         between its collateral and the pool.
/// @dev Money flow. AP a brand creates (a mint, or a refund of a redemption) is owed by the brand to
///      the pool at `valuePerPoint` each; AP redeemed at a brand is owed to it by the pool. Within an
///      epoch these are only recorded, and the brand's open net issuance is held within its credit
///      limit and covered by its collateral; `closeEpoch` nets them per brand, so N brands settle in
///      at most N movements. Invariant after every close: pool == AP supply * valuePerPoint.
///
///      Counters are cumulative and never reset, so the hot path updates a slot that is already
///      non-zero; a close compares them with their values at the previous close. A close visits only
///      the brands that issued or redeemed in the epoch (at about 25,000 gas each, some 1,000 brands
///      fit one block), so idle brands cost nothing.
///
///      Liveness: once an epoch has been open `epochLength` seconds anyone may close it; the settler
///      role may close earlier, but never before `minEpochLength`.
contract Settlement is ISettlement, AccessControlDefaultAdminRules, Pausable, ReentrancyGuard {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    bytes32 public constant GOVERNOR_ROLE = keccak256("GOVERNOR_ROLE");
    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");

    struct Account {
        uint128 collateral; // settlement-token units deposited and not yet moved to the pool
        uint96 creditLimit; // most AP the brand may have issued net within one open epoch
        // One slot for everything the hot path writes:
        uint112 issued; // cumulative AP created by the brand (mints and refunds)
        uint112 redeemed; // cumulative AP redeemed at the brand
        uint32 touchedEpoch; // last epoch the brand issued or redeemed in
        uint128 settledIssued; // `issued` at the last close
        uint128 settledRedeemed; // `redeemed` at the last close
        address payout; // where withdrawals go (the brand's account when unset)
    }

    /// @dev The epoch state, one slot.
    struct Epoch {
        uint128 pool; // settlement-token units backing the AP supply as of the last close
        uint64 number;
        uint64 openedAt;
    }

    IERC20 public immutable settlementToken;
    IAllianceRegistry public immutable registry;
    /// @notice Settlement-token units one AP is worth, fixed for the life of the alliance.
    uint256 public immutable valuePerPoint;
    /// @notice The AlliancePoints contract, the only caller of the record functions. Immutable (the
    ///         deployer precomputes its address) so the hot path reads no storage to check it.
    address public immutable points;
    /// @notice No epoch closes earlier than this many seconds after it opened.
    uint64 public immutable minEpochLength;
    /// @notice After this many seconds open, anyone may close the epoch.
    uint64 public immutable epochLength;

    Epoch private _state;
    /// @notice Settlement-token units held as collateral for all brands.
    uint256 public totalCollateral;

    mapping(uint32 id => Account) private _accounts;
    /// @dev Brands that issued or redeemed in the open epoch, in first-touch order.
    uint32[] private _touched;

    modifier onlyPoints() {
        if (msg.sender != points) revert OnlyPoints(msg.sender);
        _;
    }

    /// @param governor Holder of the admin, governance and settler roles.
    /// @param adminDelay Seconds a transfer of the admin role must wait before it can be accepted.
    /// @param epochLengths (minimum, normal) epoch length in seconds; minimum <= normal.
    constructor(
        address governor,
        uint48 adminDelay,
        IAllianceRegistry registry_,
        IERC20 token,
        address points_,
        uint256 valuePerPoint_,
        uint64[2] memory epochLengths
    ) AccessControlDefaultAdminRules(adminDelay, governor) {
        if (address(registry_) == address(0) || address(token) == address(0) || points_ == address(0)) revert ZeroAddress();
        if (valuePerPoint_ == 0 || epochLengths[1] == 0) revert ZeroAmount();
        if (epochLengths[0] > epochLengths[1]) revert EpochTooShort(epochLengths[1], epochLengths[0]);
        _grantRole(GOVERNOR_ROLE, governor);
        _grantRole(SETTLER_ROLE, governor);
        registry = registry_;
        settlementToken = token;
        points = points_;
        valuePerPoint = valuePerPoint_;
        (minEpochLength, epochLength) = (epochLengths[0], epochLengths[1]);
        _state = Epoch(0, 1, uint64(block.timestamp));
    }

    // ------------------------------------------------------------------ governance

    /// @notice Set the most AP a brand may have issued net within one open epoch.
    function setCreditLimit(address brand, uint96 limit) external onlyRole(GOVERNOR_ROLE) {
        uint32 id = _admitted(brand);
        _accounts[id].creditLimit = limit;
        emit CreditLimitSet(id, brand, limit);
    }

    /// @notice Set where a brand's withdrawals go (its treasury), whatever key its gateway holds.
    function setPayout(address brand, address payout) external onlyRole(GOVERNOR_ROLE) {
        uint32 id = _admitted(brand);
        _accounts[id].payout = payout;
        emit PayoutSet(id, brand, payout);
    }

    /// @notice Release a suspended brand's free collateral to its payout address: the only way
    ///         collateral leaves a suspended brand.
    function releaseCollateral(address brand, uint256 amount) external onlyRole(GOVERNOR_ROLE) nonReentrant whenNotPaused {
        (uint32 id, IAllianceRegistry.Status status) = registry.brandOf(brand);
        if (status == IAllianceRegistry.Status.None) revert NotAdmitted(brand);
        if (status == IAllianceRegistry.Status.Active) revert BrandIsActive(brand);
        address payout = _accounts[id].payout;
        if (payout == address(0)) revert NoPayout(brand);
        _withdraw(id, brand, amount, payout);
    }

    /// @notice Stop deposits, withdrawals, issuance, redemption and epoch closes.
    function pause() external onlyRole(GOVERNOR_ROLE) {
        _pause();
    }

    /// @notice Resume after a pause.
    function unpause() external onlyRole(GOVERNOR_ROLE) {
        _unpause();
    }

    // ------------------------------------------------------------------ brands

    /// @notice Add collateral. The caller must have approved this contract on the settlement token.
    function deposit(uint256 amount) external nonReentrant whenNotPaused {
        if (amount == 0) revert ZeroAmount();
        uint32 id = _admitted(msg.sender);
        Account storage a = _accounts[id];
        a.collateral += amount.toUint128();
        totalCollateral += amount;
        emit CollateralDeposited(msg.sender, amount, a.collateral);
        settlementToken.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice An active brand takes back collateral that backs nothing (its open net issuance stays
    ///         reserved), paid to its payout address if governance set one.
    function withdraw(uint256 amount) external nonReentrant whenNotPaused {
        (uint32 id, IAllianceRegistry.Status status) = registry.brandOf(msg.sender);
        if (status != IAllianceRegistry.Status.Active) revert BrandNotActive(msg.sender);
        address payout = _accounts[id].payout;
        _withdraw(id, msg.sender, amount, payout == address(0) ? msg.sender : payout);
    }

    // ------------------------------------------------------------------ called by AlliancePoints

    /// @inheritdoc ISettlement
    function recordIssue(uint32 id, uint256 amount) external onlyPoints whenNotPaused returns (uint64 epoch) {
        Account storage a = _accounts[id];
        epoch = _touch(id, a);
        a.issued += amount.toUint112();
        uint256 net = _openNetIssued(a);
        if (net > a.creditLimit) revert CreditLimitExceeded(registry.accountOf(id), net, a.creditLimit);
        uint256 required = net * valuePerPoint;
        if (required > a.collateral) revert InsufficientCollateral(registry.accountOf(id), required, a.collateral);
    }

    /// @inheritdoc ISettlement
    function recordRedemption(uint32 id, uint256 amount) external onlyPoints whenNotPaused returns (uint64 epoch) {
        Account storage a = _accounts[id];
        epoch = _touch(id, a);
        a.redeemed += amount.toUint112();
    }

    // ------------------------------------------------------------------ epoch close

    /// @notice Net every brand active in the epoch against the pool and open the next epoch.
    ///         Refused while this contract or AlliancePoints is paused (refunds and redemptions must
    ///         be possible in the epoch being closed) and before `minEpochLength`; before
    ///         `epochLength` only the settler role may close.
    function closeEpoch() external nonReentrant whenNotPaused {
        if (IAlliancePoints(points).paused()) revert PointsPaused();
        Epoch memory s = _state;
        uint256 openFor = block.timestamp - s.openedAt;
        if (openFor < minEpochLength) revert EpochTooShort(openFor, minEpochLength);
        if (openFor < epochLength && !hasRole(SETTLER_ROLE, msg.sender)) {
            revert EarlyCloseNotAllowed(msg.sender, openFor, epochLength);
        }
        uint256 value = valuePerPoint;
        // slither-disable-next-line uninitialized-local: a sum that starts at zero
        uint256 epochIssued;
        // slither-disable-next-line uninitialized-local: a sum that starts at zero
        uint256 epochRedeemed;
        uint256 n = _touched.length;
        for (uint256 i; i < n; ++i) {
            uint32 id = _touched[i];
            Account storage a = _accounts[id];
            uint256 issued = a.issued - a.settledIssued;
            uint256 redeemed = a.redeemed - a.settledRedeemed;
            (a.settledIssued, a.settledRedeemed) = (a.issued, a.redeemed);
            // Cover was checked at every issue, so the issuer's collateral never goes negative here;
            // checked arithmetic would revert the whole close if it did.
            uint256 collateral = a.collateral + redeemed * value - issued * value;
            a.collateral = collateral.toUint128();
            epochIssued += issued;
            epochRedeemed += redeemed;
            emit BrandSettled(
                s.number, registry.accountOf(id), issued, redeemed, int256(redeemed * value) - int256(issued * value), collateral
            );
        }
        delete _touched;
        // Summed after the loop: a running pool could dip below zero part-way (a brand owed by the
        // pool listed before the issuer whose mints back it) and revert a valid close.
        uint256 pool = s.pool + epochIssued * value - epochRedeemed * value;
        uint256 supply = IERC20(points).totalSupply();
        if (pool != supply * value) revert InvariantBroken(pool, supply * value);
        totalCollateral = totalCollateral + epochRedeemed * value - epochIssued * value;
        emit EpochClosed(s.number, s.openedAt, epochIssued, epochRedeemed, pool, supply);
        _state = Epoch(pool.toUint128(), s.number + 1, uint64(block.timestamp));
    }

    // ------------------------------------------------------------------ reads

    /// @notice The open epoch's number.
    function currentEpoch() external view returns (uint64) {
        return _state.number;
    }

    /// @notice When the open epoch opened.
    function epochOpenedAt() external view returns (uint64) {
        return _state.openedAt;
    }

    /// @notice Settlement-token units backing the AP supply as of the last close.
    function poolBalance() external view returns (uint256) {
        return _state.pool;
    }

    /// @notice Ids of the brands that issued or redeemed in the open epoch.
    function touchedBrands() external view returns (uint32[] memory) {
        return _touched;
    }

    /// @notice A brand's settlement record (by its current or any former account).
    function accountOf(address brand) external view returns (Account memory) {
        return _accounts[registry.idOf(brand)];
    }

    /// @notice The brand's open-epoch position: AP created and redeemed since the last close, and
    ///         the collateral it may still withdraw.
    function openPosition(address brand) external view returns (uint256 issued, uint256 redeemed, uint256 freeCollateral) {
        Account storage a = _accounts[registry.idOf(brand)];
        issued = a.issued - a.settledIssued;
        redeemed = a.redeemed - a.settledRedeemed;
        freeCollateral = _free(a);
    }

    // ------------------------------------------------------------------ internals

    function _admitted(address brand) private view returns (uint32 id) {
        IAllianceRegistry.Status status;
        (id, status) = registry.brandOf(brand);
        if (status == IAllianceRegistry.Status.None) revert NotAdmitted(brand);
    }

    function _touch(uint32 id, Account storage a) private returns (uint64 epoch) {
        epoch = _state.number;
        if (a.touchedEpoch != uint32(epoch)) {
            a.touchedEpoch = uint32(epoch);
            _touched.push(id);
        }
    }

    function _withdraw(uint32 id, address brand, uint256 amount, address to) private {
        if (amount == 0) revert ZeroAmount();
        Account storage a = _accounts[id];
        uint256 free = _free(a);
        if (amount > free) revert InsufficientCollateral(brand, amount, free);
        a.collateral -= uint128(amount);
        totalCollateral -= amount;
        emit CollateralWithdrawn(brand, amount, a.collateral, to);
        settlementToken.safeTransfer(to, amount);
    }

    /// @dev AP created minus AP redeemed at the brand since the last close, floored at zero.
    function _openNetIssued(Account storage a) private view returns (uint256) {
        uint256 issued = a.issued - a.settledIssued;
        uint256 redeemed = a.redeemed - a.settledRedeemed;
        return issued > redeemed ? issued - redeemed : 0;
    }

    function _free(Account storage a) private view returns (uint256) {
        uint256 reserved = _openNetIssued(a) * valuePerPoint;
        return a.collateral > reserved ? a.collateral - reserved : 0;
    }
}
