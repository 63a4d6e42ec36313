// The member's keys, made and kept in this browser: nothing here ever leaves it.
//
// The wallet is the CLI's (gateway/member.py): 32 bytes of BIP-39 entropy in a standard Web3 Secret
// Storage (v3) keystore marked "x-alliance-kind": "bip39-entropy"; address i is BIP-44
// m/44'/60'/0'/0/i. Here it is encrypted with PBKDF2-HMAC-SHA256 and AES-128-CTR (WebCrypto), the
// MAC is Keccak-256 as the format says; keystores made by the CLI (scrypt) are read too. So the file
// this page exports is what `alliance member import-wallet` reads, and the other way round.
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { ed25519 } from '@noble/curves/ed25519.js';
import { keccak_256 } from '@noble/hashes/sha3.js';
import { scryptAsync } from '@noble/hashes/scrypt.js';
import { HDKey } from '@scure/bip32';
import { entropyToMnemonic, mnemonicToSeed } from '@scure/bip39';
import { wordlist } from '@scure/bip39/wordlists/english.js';

export const SEED_KIND = 'bip39-entropy';
const PBKDF2_ROUNDS = 600000;  // OWASP's figure for PBKDF2-HMAC-SHA256
const enc = new TextEncoder();

export const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
export const unhex = (s) => {
  s = s.startsWith('0x') ? s.slice(2) : s;
  if (s.length % 2 || /[^0-9a-fA-F]/.test(s)) throw new Error('not hex');
  return Uint8Array.from(s.match(/../g) || [], (b) => parseInt(b, 16));
};
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) { out.set(p, i); i += p.length; }
  return out;
};
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

async function pbkdf2(passphrase, salt, rounds, length) {
  const key = await crypto.subtle.importKey('raw', enc.encode(passphrase), 'PBKDF2', false, ['deriveBits']);
  return new Uint8Array(await crypto.subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt, iterations: rounds }, key, length * 8));
}

async function aes128ctr(key, iv, data) {
  const k = await crypto.subtle.importKey('raw', key, 'AES-CTR', false, ['encrypt']);
  return new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-CTR', counter: iv, length: 128 }, k, data));
}

/** A v3 keystore of `secret` under `passphrase` (PBKDF2, AES-128-CTR, Keccak MAC). */
export async function encryptKeystore(secret, passphrase) {
  const salt = crypto.getRandomValues(new Uint8Array(32));
  const iv = crypto.getRandomValues(new Uint8Array(16));
  const derived = await pbkdf2(passphrase, salt, PBKDF2_ROUNDS, 32);
  const ciphertext = await aes128ctr(derived.slice(0, 16), iv, secret);
  return {
    version: 3, id: crypto.randomUUID(), 'x-alliance-kind': SEED_KIND,
    crypto: {
      cipher: 'aes-128-ctr', cipherparams: { iv: hex(iv) }, ciphertext: hex(ciphertext),
      kdf: 'pbkdf2', kdfparams: { c: PBKDF2_ROUNDS, dklen: 32, prf: 'hmac-sha256', salt: hex(salt) },
      mac: hex(keccak_256(concat(derived.slice(16, 32), ciphertext))),
    },
  };
}

/** The secret in a v3 keystore (PBKDF2 or scrypt); throws 'wrong passphrase' when the MAC differs. */
export async function decryptKeystore(keystore, passphrase) {
  const c = keystore.crypto || keystore.Crypto;
  if (keystore.version !== 3 || !c || c.cipher !== 'aes-128-ctr') throw new Error('not a v3 keystore');
  const p = c.kdfparams;
  let derived;
  if (c.kdf === 'pbkdf2' && p.prf === 'hmac-sha256') derived = await pbkdf2(passphrase, unhex(p.salt), p.c, p.dklen);
  else if (c.kdf === 'scrypt') derived = await scryptAsync(enc.encode(passphrase), unhex(p.salt), { N: p.n, r: p.r, p: p.p, dkLen: p.dklen });
  else throw new Error('unsupported key derivation ' + c.kdf);
  const ciphertext = unhex(c.ciphertext);
  if (!equal(keccak_256(concat(derived.slice(16, 32), ciphertext)), unhex(c.mac))) throw new Error('wrong passphrase');
  return aes128ctr(derived.slice(0, 16), unhex(c.cipherparams.iv), ciphertext);
}

export const newEntropy = () => crypto.getRandomValues(new Uint8Array(32));
export const recoveryPhrase = (entropy) => entropyToMnemonic(entropy, wordlist);

/** Address i of the wallet: its secret key and EIP-55 address. */
export async function account(entropy, index = 0) {
  const seed = await mnemonicToSeed(entropyToMnemonic(entropy, wordlist));
  const key = HDKey.fromMasterSeed(seed).derive(`m/44'/60'/0'/0/${index}`).privateKey;
  return { key, address: addressOf(key) };
}

export function addressOf(key) {
  const raw = hex(keccak_256(secp256k1.getPublicKey(key, false).slice(1)).slice(12));
  const h = hex(keccak_256(enc.encode(raw)));
  return '0x' + [...raw].map((ch, i) => (parseInt(h[i], 16) >= 8 ? ch.toUpperCase() : ch)).join('');
}

function signHash(hash, key) {
  const sig = secp256k1.sign(hash, key, { prehash: false, format: 'recovered' });  // recovery byte, r, s
  return '0x' + hex(sig.slice(1)) + (27 + sig[0]).toString(16);
}

/** EIP-191 personal_sign of a text (the wallet-link challenge). */
export function personalSign(text, key) {
  const body = enc.encode(text);
  return signHash(keccak_256(concat(enc.encode(`\x19Ethereum Signed Message:\n${body.length}`), body)), key);
}

// EIP-712: only the two shapes the alliance signs (the domain, and Redeem).
const word = (n) => unhex(BigInt(n).toString(16).padStart(64, '0'));
const addr = (a) => concat(new Uint8Array(12), unhex(a));
const typeHash = (s) => keccak_256(enc.encode(s));
const DOMAIN = typeHash('EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)');
const REDEEM = typeHash('Redeem(address owner,address brand,uint256 amount,uint256 nonce,uint256 deadline)');

export function redeemDigest(domain, m) {
  const separator = keccak_256(concat(DOMAIN, keccak_256(enc.encode(domain.name)), keccak_256(enc.encode(domain.version)),
    word(domain.chainId), addr(domain.verifyingContract)));
  const struct = keccak_256(concat(REDEEM, addr(m.owner), addr(m.brand), word(m.amount), word(m.nonce), word(m.deadline)));
  return keccak_256(concat(Uint8Array.of(0x19, 0x01), separator, struct));
}

/** A signed redemption authorisation, as POST /v1/me/redemptions takes it. */
export function signRedemption(domain, message, key) {
  return { ...message, signature: signHash(redeemDigest(domain, message), key) };
}

// Consent receipts: a compact JWS (EdDSA) by the brand's receipt key, checked here.
const b64url = (s) => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (s.length % 4)) % 4)), (c) => c.charCodeAt(0));

const canon = (v) => (Array.isArray(v) ? `[${v.map(canon).join(',')}]`
  : v && typeof v === 'object' ? `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canon(v[k])}`).join(',')}}` : JSON.stringify(v));

/** Whether a Kantara receipt ({format, jws, receipt}) is signed by the brand's key (an Ed25519 SPKI PEM). */
export function verifyReceipt(receipt, publicKeyPem, keyId) {
  try {
    const spki = b64url(publicKeyPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''));
    const [header, payload, signature] = receipt.jws.split('.');
    const head = JSON.parse(new TextDecoder().decode(b64url(header)));
    const claims = JSON.parse(new TextDecoder().decode(b64url(payload)));
    return head.alg === 'EdDSA' && head.kid === keyId && canon(claims) === canon(receipt.receipt) &&
      ed25519.verify(b64url(signature), enc.encode(`${header}.${payload}`), spki.slice(-32));
  } catch (e) {
    return false;
  }
}
