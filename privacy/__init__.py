"""Privacy primitives of the loyalty alliance: small modules, no web, no database.

==============  ==============================================================
pseudonyms      identifier normalisation, versioned HMAC-SHA256 pseudonyms
vault           envelope encryption of PII fields, crypto-shredding evidence
masking         display masking of phones, e-mails, names, cards
keys            Ed25519 signing key, KEK and pepper loading / generation
receipts        signed consent receipts (Ed25519 over RFC 8785 JSON)
hashchain       append-only hash-chained log with tamper localisation
merkle          RFC 9162 Merkle roots, inclusion and consistency proofs
dp              Gaussian calibration and DP-SGD accounting (dp_accounting)
kanon           small-cell suppression of published counts
==============  ==============================================================
"""

from typing import TYPE_CHECKING, Any

from privacy.errors import (
    ChainError,
    DecryptionError,
    DPError,
    IdentifierError,
    KeyMaterialError,
    KeyShreddedError,
    MerkleError,
    PrivacyError,
    ReceiptError,
    ReceiptSignatureError,
    SuppressionError,
    UnknownKeyError,
    VaultError,
)
from privacy.hashchain import ChainEntry, ChainVerification, HashChain, verify_chain
from privacy.kanon import SuppressedCounts, suppress_below_k, suppress_with_total
from privacy.keys import (
    GeneratedKeyFiles,
    PublicKey,
    SigningKey,
    generate_key_files,
    key_id_for,
    load_kek,
    load_pepper,
    load_public_key,
    load_signing_key,
)
from privacy.masking import mask_card, mask_email, mask_name, mask_phone
from privacy.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    verify_consistency,
    verify_inclusion,
)
from privacy.pseudonyms import KeyedHasher, Pseudonymiser, normalise, parse_pseudonym
from privacy.receipts import (
    Channel,
    ConsentReceipt,
    ConsentState,
    LawfulBasis,
    Purpose,
    SignedReceipt,
    policy_digest,
    sign_receipt,
    verify_receipt,
)
from privacy.vault import (
    ErasureEvidence,
    KeyEncryptionKey,
    ShreddingCertificate,
    Vault,
    WrappedKey,
)

if TYPE_CHECKING:
    from privacy.dp import (
        PrivacyAccountant,
        PrivacySpend,
        calibrate_noise_multiplier,
        dpsgd_epsilon,
        gaussian_sigma,
    )

# dp pulls in dp_accounting and SciPy (~2 s); load it only when first used so
# a gateway that needs pseudonyms and the vault starts quickly.
_LAZY_DP = frozenset(
    {"PrivacyAccountant", "PrivacySpend", "calibrate_noise_multiplier", "dpsgd_epsilon", "gaussian_sigma"}
)


def __getattr__(name: str) -> Any:
    if name in _LAZY_DP:
        from privacy import dp

        return getattr(dp, name)
    raise AttributeError(f"module 'privacy' has no attribute {name!r}")


__all__ = [
    "EMPTY_ROOT",
    "ChainEntry",
    "ChainError",
    "ChainVerification",
    "Channel",
    "ConsentReceipt",
    "ConsentState",
    "DPError",
    "DecryptionError",
    "ErasureEvidence",
    "GeneratedKeyFiles",
    "HashChain",
    "IdentifierError",
    "KeyEncryptionKey",
    "KeyMaterialError",
    "KeyShreddedError",
    "KeyedHasher",
    "LawfulBasis",
    "MerkleError",
    "MerkleTree",
    "PrivacyAccountant",
    "PrivacyError",
    "PrivacySpend",
    "Pseudonymiser",
    "PublicKey",
    "Purpose",
    "ReceiptError",
    "ReceiptSignatureError",
    "ShreddingCertificate",
    "SignedReceipt",
    "SigningKey",
    "SuppressedCounts",
    "SuppressionError",
    "UnknownKeyError",
    "Vault",
    "VaultError",
    "WrappedKey",
    "calibrate_noise_multiplier",
    "consistency_proof",
    "dpsgd_epsilon",
    "gaussian_sigma",
    "generate_key_files",
    "inclusion_proof",
    "key_id_for",
    "leaf_hash",
    "load_kek",
    "load_pepper",
    "load_public_key",
    "load_signing_key",
    "mask_card",
    "mask_email",
    "mask_name",
    "mask_phone",
    "merkle_root",
    "normalise",
    "parse_pseudonym",
    "policy_digest",
    "sign_receipt",
    "suppress_below_k",
    "suppress_with_total",
    "verify_chain",
    "verify_consistency",
    "verify_inclusion",
    "verify_receipt",
]
