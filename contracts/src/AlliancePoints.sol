// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {AllianceRegistry} from "./AllianceRegistry.sol";
import {Settlement} from "./Settlement.sol";

/// @title AlliancePoints (AP)
/// @notice The alliance's one points token. A brand mints AP when a member exchanges the brand's own
///         points; a member spends AP at any brand by signing an EIP-712 authorisation that the brand
///         submits (and pays gas for), so members never need ether.
/// @dev Whole points only (0 decimals): points are integers everywhere in the alliance.
///
///      Redemption nonces are unordered (a member may sign several authorisations at once, for
///      different brands, and they may be submitted in any order). They live in 256-bit words per
///      (owner, brand): [epoch:64][usedInEpoch:96][used:96], 96 nonces a word. `used` stops replay
///      forever; `usedInEpoch` and `epoch` let a refund prove the redemption falls in the open epoch
///      without storing a record per redemption (which would cost a fresh storage slot each time).
contract AlliancePoints is ERC20, EIP712, AccessControl, Pausable {
    bytes32 public constant GOVERNOR_ROLE = keccak256("GOVERNOR_ROLE");
    bytes32 public constant REDEEM_TYPEHASH =
        keccak256("Redeem(address owner,address brand,uint256 amount,uint256 nonce,uint256 deadline)");

    uint256 private constant NONCES_PER_WORD = 96;
    uint256 private constant USED_IN_EPOCH_SHIFT = 96;
    uint256 private constant EPOCH_SHIFT = 192;
    uint256 private constant BITS_96 = (1 << 96) - 1;

    /// @notice A member's authorisation to redeem `amount` AP at `brand`.
    struct Redemption {
        address owner;
        address brand;
        uint256 amount;
        uint256 nonce;
        uint256 deadline;
    }

    AllianceRegistry public immutable registry;
    Settlement public immutable settlement;

    mapping(address owner => mapping(address brand => mapping(uint256 word => uint256))) private _nonceWords;

    /// @notice AP minted by `brand` to `to`; `ref` is the brand's own reference (its exchange id), so
    ///         the brand's ledger and the chain reconcile one to one and a retried mint is detectable.
    event Issued(address indexed brand, address indexed to, bytes32 indexed ref, uint256 amount);
    event Redeemed(address indexed owner, address indexed brand, uint256 nonce, uint256 amount, uint64 epoch);
    event Refunded(address indexed owner, address indexed brand, uint256 nonce, uint256 amount, uint64 epoch);
    event AuthorizationCancelled(address indexed owner, address indexed brand, uint256 nonce);

    error BrandNotActive(address brand);
    error NotAdmitted(address brand);
    error ZeroAmount();
    error LengthMismatch();
    error WrongBrand(address expected, address caller);
    error AuthorizationExpired(uint256 deadline, uint256 nowTs);
    error InvalidSignature();
    error NonceAlreadyUsed(address owner, address brand, uint256 nonce);
    error NotRefundable(address owner, address brand, uint256 nonce);
    error RefundTooLarge(uint256 amount, uint256 authorised);
    error SettlementNotBound(address settlement);

    constructor(address governor, AllianceRegistry registry_, Settlement settlement_)
        ERC20("Alliance Points", "AP")
        EIP712("AlliancePoints", "1")
    {
        if (settlement_.points() != address(this)) revert SettlementNotBound(address(settlement_));
        _grantRole(DEFAULT_ADMIN_ROLE, governor);
        _grantRole(GOVERNOR_ROLE, governor);
        registry = registry_;
        settlement = settlement_;
    }

    function decimals() public pure override returns (uint8) {
        return 0;
    }

    // ------------------------------------------------------------------ issue

    /// @notice Mint AP to a member, backed by the calling brand's collateral.
    function mint(address to, uint256 amount, bytes32 ref) external whenNotPaused {
        _requireActive(msg.sender);
        if (amount == 0) revert ZeroAmount();
        _mint(to, amount);
        emit Issued(msg.sender, to, ref, amount);
        settlement.recordIssue(msg.sender, amount);
    }

    /// @notice Mint to many members in one transaction; the credit check runs once on the total.
    function mintBatch(address[] calldata to, uint256[] calldata amounts, bytes32[] calldata refs)
        external
        whenNotPaused
    {
        _requireActive(msg.sender);
        uint256 n = to.length;
        if (amounts.length != n || refs.length != n) revert LengthMismatch();
        uint256 total;
        for (uint256 i; i < n; ++i) {
            uint256 amount = amounts[i];
            if (amount == 0) revert ZeroAmount();
            _mint(to[i], amount);
            emit Issued(msg.sender, to[i], refs[i], amount);
            total += amount;
        }
        if (total == 0) revert ZeroAmount();
        settlement.recordIssue(msg.sender, total);
    }

    // ------------------------------------------------------------------ redeem

    /// @notice Burn a member's AP at the calling brand, on the member's signed authorisation.
    /// @dev Reverts on a wrong brand, an expired deadline, a signature not by `r.owner` for this
    ///      chain and contract (EIP-712 domain), or a nonce already used.
    function redeem(Redemption calldata r, bytes calldata signature) external whenNotPaused {
        if (r.brand != msg.sender) revert WrongBrand(r.brand, msg.sender);
        _requireActive(msg.sender);
        if (block.timestamp > r.deadline) revert AuthorizationExpired(r.deadline, block.timestamp);
        if (r.amount == 0) revert ZeroAmount();
        _requireSigned(r, signature);
        _burn(r.owner, r.amount);
        uint64 epoch = settlement.recordRedemption(msg.sender, r.amount);
        _useNonce(r.owner, msg.sender, r.nonce, epoch);
        emit Redeemed(r.owner, msg.sender, r.nonce, r.amount, epoch);
    }

    /// @notice Reverse (part of) a redemption made at the calling brand in the open epoch, giving the
    ///         member back `amount` AP. Once per redemption. The deadline does not apply: a refund may
    ///         come after the authorisation has expired.
    /// @dev Allowed for suspended brands too, so a suspension never traps a member's refund.
    function refund(Redemption calldata r, bytes calldata signature, uint256 amount) external whenNotPaused {
        if (r.brand != msg.sender) revert WrongBrand(r.brand, msg.sender);
        if (!registry.isAdmitted(msg.sender)) revert NotAdmitted(msg.sender);
        if (amount == 0) revert ZeroAmount();
        if (amount > r.amount) revert RefundTooLarge(amount, r.amount);
        _requireSigned(r, signature);
        uint64 epoch = settlement.recordRefund(msg.sender, amount);
        (uint256 wordIndex, uint256 bit) = _nonceSlot(r.nonce);
        uint256 word = _nonceWords[r.owner][msg.sender][wordIndex];
        uint256 inEpochBit = bit << USED_IN_EPOCH_SHIFT;
        if (word >> EPOCH_SHIFT != epoch || word & inEpochBit == 0) revert NotRefundable(r.owner, msg.sender, r.nonce);
        _nonceWords[r.owner][msg.sender][wordIndex] = word & ~inEpochBit;
        _mint(r.owner, amount);
        emit Refunded(r.owner, msg.sender, r.nonce, amount, epoch);
    }

    /// @notice A member withdraws an authorisation they signed but no longer want used.
    function cancelAuthorization(address brand, uint256 nonce) external {
        (uint256 wordIndex, uint256 bit) = _nonceSlot(nonce);
        uint256 word = _nonceWords[msg.sender][brand][wordIndex];
        if (word & bit != 0) revert NonceAlreadyUsed(msg.sender, brand, nonce);
        _nonceWords[msg.sender][brand][wordIndex] = word | bit;
        emit AuthorizationCancelled(msg.sender, brand, nonce);
    }

    // ------------------------------------------------------------------ governance

    function pause() external onlyRole(GOVERNOR_ROLE) {
        _pause();
    }

    function unpause() external onlyRole(GOVERNOR_ROLE) {
        _unpause();
    }

    // ------------------------------------------------------------------ reads

    /// @notice The EIP-712 digest a member signs for `r`.
    function redemptionDigest(Redemption calldata r) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(REDEEM_TYPEHASH, r.owner, r.brand, r.amount, r.nonce, r.deadline)));
    }

    /// @notice The used-nonce bitmap of one word (nonces 96*word .. 96*word+95), for wallets that
    ///         pick the lowest free nonce so their redemptions share an already-written word.
    function usedNonces(address owner, address brand, uint256 word) external view returns (uint256) {
        return _nonceWords[owner][brand][word] & BITS_96;
    }

    function isNonceUsed(address owner, address brand, uint256 nonce) external view returns (bool) {
        (uint256 wordIndex, uint256 bit) = _nonceSlot(nonce);
        return _nonceWords[owner][brand][wordIndex] & bit != 0;
    }

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ------------------------------------------------------------------ internals

    function _requireActive(address brand) private view {
        if (!registry.isActive(brand)) revert BrandNotActive(brand);
    }

    function _requireSigned(Redemption calldata r, bytes calldata signature) private view {
        bytes32 digest = redemptionDigest(r);
        // Member keys sign with ECDSA; try that first, since asking whether the owner is a contract
        // costs a cold account access. A contract's address never has a key, so a recovered match is
        // proof enough; otherwise ask the owner as an ERC-1271 smart wallet.
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, signature);
        if (err == ECDSA.RecoverError.NoError && recovered == r.owner) return;
        if (!SignatureChecker.isValidERC1271SignatureNow(r.owner, digest, signature)) revert InvalidSignature();
    }

    function _nonceSlot(uint256 nonce) private pure returns (uint256 wordIndex, uint256 bit) {
        return (nonce / NONCES_PER_WORD, 1 << (nonce % NONCES_PER_WORD));
    }

    function _useNonce(address owner, address brand, uint256 nonce, uint64 epoch) private {
        (uint256 wordIndex, uint256 bit) = _nonceSlot(nonce);
        uint256 word = _nonceWords[owner][brand][wordIndex];
        if (word & bit != 0) revert NonceAlreadyUsed(owner, brand, nonce);
        // A word last touched in an earlier epoch starts this one with no refundable redemptions.
        uint256 inEpoch = word >> EPOCH_SHIFT == epoch ? (word >> USED_IN_EPOCH_SHIFT) & BITS_96 : 0;
        _nonceWords[owner][brand][wordIndex] =
            (uint256(epoch) << EPOCH_SHIFT) | ((inEpoch | bit) << USED_IN_EPOCH_SHIFT) | (word & BITS_96) | bit;
    }
}
