"""Connect to the alliance chain by URL, and fund, sign and send transactions the same way on
every backend.

- ``embedded`` (the default): an in-process EVM (eth-tester on py-evm), for development and tests.
- ``http://…`` / ``https://…``: any EVM JSON-RPC node (anvil locally, a consortium chain such as
  Besu/QBFT in production).

Every account signs locally (its key never leaves the process), so the code path is one whatever the
node: no node-side unlocked accounts.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester.exceptions import TransactionFailed
from eth_utils import function_abi_to_4byte_selector, get_abi_input_types, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.contract.contract import ContractConstructor
from web3.exceptions import ContractCustomError, ContractLogicError, ContractPanicError, Web3RPCError

from .artifacts import error_selectors
from .defaults import EMBEDDED

# Importing the chain libraries raises the interpreter's recursion limit (py_ecc to 100,000, py-evm
# to 12,288), so deep recursion overflows the C stack and kills the process instead of raising
# RecursionError: a JSON body nested 100,000 deep did that to a gateway. Every process that talks to
# a chain imports this module after them; it puts CPython's default back (the alliance's contracts
# call each other a few levels deep, far within it).
RECURSION_LIMIT = 1000
sys.setrecursionlimit(RECURSION_LIMIT)

REVERTS = (ContractCustomError, ContractLogicError, ContractPanicError, TransactionFailed)
#: anvil's first development account (from its public default mnemonic).
ANVIL_FAUCET_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
NODE_MODULES = Path(__file__).resolve().parent / "node_modules"


def anvil_binary() -> str:
    """anvil's own executable: ALLIANCE_ANVIL, else the native binary of the npm package (not its
    Node.js launcher in node_modules/.bin, whose process is not anvil's: stopping it left anvil
    running), else `anvil` on PATH."""
    native = sorted((NODE_MODULES / "@foundry-rs").glob("anvil-*/bin/anvil"))
    found = os.environ.get("ALLIANCE_ANVIL") or (str(native[0]) if native else shutil.which("anvil"))
    if not found:
        raise ChainError(f"anvil not found: run `npm install` in {NODE_MODULES.parent} or set ALLIANCE_ANVIL")
    return found


def anvil_command(port: int, chain_id: int = 31337, state: Path | None = None, block_time: int | None = None) -> list[str]:
    """The command line of an anvil node on loopback as the alliance runs it. `state`: a file the
    chain is loaded from and kept in (every few seconds and on exit), so a restart resumes it."""
    cmd = [anvil_binary(), "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(chain_id),
           "--hardfork", "prague", "--silent", "--gas-limit", "100000000"]
    if state is not None:
        cmd += ["--state", str(state), "--state-interval", "2"]
    if block_time:
        cmd += ["--block-time", str(block_time)]
    return cmd


class ChainError(RuntimeError):
    """The chain could not be reached or refused a transaction for a reason other than a revert."""


def shown_url(url: str) -> str:
    """A node's URL as messages show it: scheme, host and port (its user, password, path and query
    may hold an access key)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}" if parts.hostname else "the node"


class NodeProvider(Web3.HTTPProvider):
    """JSON-RPC over HTTP whose transport failures are ChainErrors, wherever a read or a send fails:
    callers handle one exception, and no message carries the node's full URL."""

    def make_request(self, method, params):
        import requests

        try:
            return super().make_request(method, params)
        except (requests.RequestException, OSError) as exc:
            raise ChainError(f"the chain node at {shown_url(str(self.endpoint_uri))} did not answer {method} "
                             f"({type(exc).__name__})") from None


class ContractRevert(ChainError):
    """A contract call reverted; ``error`` is the custom error's name and ``args`` its arguments."""

    def __init__(self, error: str, args: dict[str, Any] | None = None, raw: str | None = None):
        self.error = error
        self.args_ = args or {}
        self.raw = raw
        detail = ", ".join(f"{k}={_shown(v)}" for k, v in self.args_.items())
        super().__init__(f"{error}({detail})" if detail else error)


# The contracts' access roles by their bytes32 id, so a refusal names the role a key lacks.
ROLES = {bytes(32): "DEFAULT_ADMIN_ROLE"} | {Web3.keccak(text=name): name for name in ("GOVERNOR_ROLE", "SETTLER_ROLE")}


def _shown(value: Any) -> str:
    if isinstance(value, bytes):
        return ROLES.get(value, "0x" + value.hex())
    return str(value)


def decode_revert(exc: Exception) -> ContractRevert:
    """Turn web3's revert exceptions into a ContractRevert naming the Solidity custom error."""
    from eth_abi import decode

    data = getattr(exc, "data", None)
    if isinstance(exc, TransactionFailed):
        data = _tester_revert_data(exc)
    if isinstance(exc, (ContractCustomError, TransactionFailed)) and isinstance(data, str) and len(data) >= 10:
        payload = bytes.fromhex(data[2:])
        entry = error_selectors().get(payload[:4])
        if entry is not None:
            types = [item["type"] for item in entry["inputs"]]
            values = decode(types, payload[4:])
            return ContractRevert(entry["name"], {item["name"]: v for item, v in zip(entry["inputs"], values)}, data)
        if payload[:4] == bytes.fromhex("4e487b71"):  # Panic(uint256), as anvil's web3 path names it
            return ContractRevert("Panic", {"code": int.from_bytes(payload[4:36], "big")}, data)
        return ContractRevert("UnknownError", raw=data)
    if isinstance(exc, ContractPanicError):
        return ContractRevert("Panic", {"reason": str(exc)})
    return ContractRevert("Reverted", {"reason": str(getattr(exc, "message", exc))})


def _tester_revert_data(exc: TransactionFailed) -> str | None:
    """eth-tester reports revert data as the text ``execution reverted: b'...'`` (a Python bytes
    literal); recover the bytes from it."""
    import ast

    message = exc.args[0] if exc.args else ""
    if isinstance(message, bytes):
        return "0x" + message.hex()
    prefix = "execution reverted: "
    if isinstance(message, str) and message.startswith(prefix):
        try:
            raw = ast.literal_eval(message[len(prefix):])
        except (ValueError, SyntaxError):
            return None
        if isinstance(raw, bytes):
            return "0x" + raw.hex()
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Chain:
    """A connection to the alliance chain plus the account that funds new accounts with gas."""

    w3: Web3
    url: str
    faucet: LocalAccount
    _tester: Any = field(default=None, repr=False)  # the eth-tester instance on the embedded chain
    # Per-account send lock and next nonce: one account's transactions are numbered here, not by
    # the node, so concurrent senders never reuse a nonce.
    _locks: dict[str, threading.Lock] = field(default_factory=dict, repr=False)
    _nonces: dict[str, int] = field(default_factory=dict, repr=False)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _chain_id: int | None = field(default=None, repr=False)

    def account_lock(self, address: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(address, threading.Lock())

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:  # asked once: a chain's id never changes
            self._chain_id = self.w3.eth.chain_id
        return self._chain_id

    @property
    def embedded(self) -> bool:
        return self._tester is not None

    def fund(self, address: str, wei: int = 10**20) -> None:
        """Give an account ether for gas (brands pay gas; members never need any)."""
        Transactor(self, self.faucet).send_value(address, wei)

    def new_account(self, fund_wei: int = 10**20) -> LocalAccount:
        account = Account.create()
        if fund_wei:
            self.fund(account.address, fund_wei)
        return account

    def timestamp(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    def snapshot(self) -> Any:
        """Remember the chain state (development chains only)."""
        if self._tester is not None:
            return self._tester.take_snapshot()
        return self.w3.provider.make_request("evm_snapshot", [])["result"]

    def revert(self, snapshot: Any) -> None:
        """Return to a snapshot; locally numbered nonces are forgotten with the undone transactions."""
        if self._tester is not None:
            self._tester.revert_to_snapshot(snapshot)
        else:
            self.w3.provider.make_request("evm_revert", [snapshot])
        self._nonces.clear()

    def advance_time(self, seconds: int) -> None:
        """Move chain time forward and mine a block (development chains only)."""
        if self._tester is not None:
            self._tester.time_travel(self.timestamp() + seconds + 1)  # eth-tester mines the block at to_timestamp - 1
        else:
            self.w3.provider.make_request("evm_increaseTime", [seconds])
            self.w3.provider.make_request("evm_mine", [])


def connect(url: str = EMBEDDED, faucet_key: str | None = None) -> Chain:
    """Connect by URL. ``faucet_key`` (or ALLIANCE_FAUCET_KEY) funds accounts on a real node;
    the embedded chain and anvil bring their own development faucet."""
    if url == EMBEDDED:
        from eth_tester import EthereumTester, PyEVMBackend
        from web3.providers.eth_tester import EthereumTesterProvider

        class SerialisedProvider(EthereumTesterProvider):
            """py-evm is not thread-safe; gateways serve requests from a thread pool."""

            _lock = threading.RLock()

            def make_request(self, method, params):
                with self._lock:
                    try:
                        return super().make_request(method, params)
                    except OverflowError as exc:
                        # web3 reads every revert as Error(string); some custom errors' data then
                        # claims an impossible string length. Report the raw data as it does otherwise.
                        failed = exc.__context__
                        if not isinstance(failed, TransactionFailed):
                            raise
                        raw = failed.args[0]
                        raw = raw.args[0] if isinstance(raw, Exception) else raw
                        raise TransactionFailed(f"execution reverted: {raw}") from None

        backend = PyEVMBackend()
        tester = EthereumTester(backend)
        w3 = Web3(SerialisedProvider(tester))
        faucet = Account.from_key(backend.account_keys[0])
        return Chain(w3=w3, url=url, faucet=faucet, _tester=tester)
    if url.startswith(("http://", "https://")):
        w3 = Web3(NodeProvider(url, request_kwargs={"timeout": 30}))
        # Each of these costs a round trip or a walk of the parameters on every call: `validation`
        # asks the node for its chain id before every eth_call (half of a gateway's chain time under
        # load), and we never pass ENS names. Transactions carry the chain id we read once; the node
        # checks it against its own when it verifies the signature.
        w3.middleware_onion.remove("validation")
        w3.middleware_onion.remove("ens_name_to_address")
        if not w3.is_connected():
            raise ChainError(f"no EVM JSON-RPC node answers at {shown_url(url)}")
        key = faucet_key or os.environ.get("ALLIANCE_FAUCET_KEY") or ANVIL_FAUCET_KEY
        return Chain(w3=w3, url=url, faucet=Account.from_key(key))
    raise ChainError(f"unsupported chain URL {shown_url(url)!r}: use 'embedded' or an http(s):// JSON-RPC URL")


@dataclass(frozen=True)
class SignedTx:
    raw: str  # 0x-hex of the signed transaction, safe to store and broadcast again
    hash: str
    nonce: int


def call_data(call) -> bytes:
    """The calldata of a contract function call (``contract.functions.f(...)``), encoded by eth_abi
    from the function's ABI. Arguments must already be canonical (checksummed addresses, bytes for
    bytes): web3's own path normalises each one first, which for a batch of a hundred redemptions took
    ~45 ms of the sender's time against ~4 ms here. A deployment (a constructor) is encoded by web3."""
    if isinstance(call, ContractConstructor):
        return bytes(HexBytes(call.data_in_transaction))
    if call.kwargs:
        raise TypeError("pass contract call arguments by position")
    return function_abi_to_4byte_selector(call.abi) + abi_encode(get_abi_input_types(call.abi), call.args)


class Transactor:
    """Signs and sends one account's transactions, numbering nonces locally so several threads can
    send from the same account without colliding."""

    def __init__(self, chain: Chain, account: LocalAccount, gas_margin: float = 1.2):
        self.chain = chain
        self.account = account
        self.address = account.address
        self.gas_margin = gas_margin
        self._lock = chain.account_lock(self.address)

    def send(self, call, *, wait: bool = True) -> Any:
        """Send a contract function call (``contract.functions.f(...)``); return its receipt (or,
        with ``wait=False``, its hash).

        Reverts raise ContractRevert with the decoded custom error, before anything is signed.
        """
        signed = self.prepare(call)
        self.broadcast(signed)
        if not wait:
            return signed.hash
        receipt = self.receipt(signed.hash, timeout=120)
        if receipt is None:
            raise ChainError(f"transaction {signed.hash} not mined within 120 s")
        if receipt["status"] != 1:
            raise ContractRevert("Reverted", {"tx": signed.hash})
        return receipt

    def prepare(self, call, gas_limit: int | None = None) -> SignedTx:
        """Estimate, number and sign a call without sending it, so an outbox can store the signed
        transaction first: broadcasting the same bytes again can never execute twice. `gas_limit`: a
        bound known to hold for this call (a batch of many rows): the call is then only checked, not
        estimated (a node estimates by executing it several times: ~140 ms for a hundred redemptions
        on anvil, against ~20 ms for one execution). Gas not used is not paid for."""
        w3 = self.chain.w3
        tx = {"from": self.address, "data": call_data(call), "value": 0, "chainId": self.chain.chain_id}
        if not isinstance(call, ContractConstructor):
            tx["to"] = call.address
        latest = w3.eth.get_block("latest")
        try:
            if gas_limit is None:
                gas = int(w3.eth.estimate_gas(tx) * self.gas_margin)
            else:  # the same refusal as an estimate would give, at the cost of one execution (an estimate takes several)
                w3.eth.call(tx | {"gas": min(gas_limit, latest["gasLimit"])})
                gas = gas_limit
        except REVERTS as exc:
            raise decode_revert(exc) from None
        tip = w3.eth.max_priority_fee  # EIP-1559 fees as web3 sets them: room for the base fee to double
        tx |= {"gas": min(gas, latest["gasLimit"]), "maxPriorityFeePerGas": tip, "maxFeePerGas": tip + 2 * latest["baseFeePerGas"]}
        with self._lock:
            nonce = self.chain._nonces.get(self.address)
            if nonce is None:
                nonce = self.chain.w3.eth.get_transaction_count(self.address, "pending")
            tx["nonce"] = nonce
            signed = self.account.sign_transaction(tx)
            self.chain._nonces[self.address] = nonce + 1
        return SignedTx("0x" + bytes(signed.raw_transaction).hex(), "0x" + bytes(signed.hash).hex(), nonce)

    def broadcast(self, signed: SignedTx) -> None:
        """Send a stored signed transaction; a node that already has it is not an error."""
        try:
            self.chain.w3.eth.send_raw_transaction(signed.raw)
        except REVERTS as exc:
            raise decode_revert(exc) from None
        except (Web3RPCError, ValueError) as exc:
            message = str(exc).lower()
            if "already known" in message or "already imported" in message or "known transaction" in message:
                return
            self.renumber()
            raise ChainError(f"transaction rejected: {exc}") from exc
        except (ConnectionError, OSError) as exc:
            raise ChainError(f"chain unreachable: {exc}") from exc

    def receipt(self, tx_hash: str, timeout: float = 0) -> Any | None:
        """The receipt if the transaction is mined (waiting up to `timeout` seconds), else None."""
        from web3.exceptions import TimeExhausted, TransactionNotFound

        try:
            if timeout:
                return self.chain.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.05)
            return self.chain.w3.eth.get_transaction_receipt(tx_hash)
        except (TransactionNotFound, TimeExhausted):
            return None

    def renumber(self) -> None:
        """Forget the locally numbered next nonce: the next transaction asks the node again (after one
        was refused, or signed and never sent)."""
        self.chain._nonces.pop(self.address, None)

    def confirmed_nonce(self) -> int:
        """How many of this account's transactions are mined: a stored transaction with a lower
        nonce that has no receipt was replaced and can never be mined."""
        return self.chain.w3.eth.get_transaction_count(self.address, "latest")

    def send_value(self, to: str, wei: int) -> Any:
        tx = {"to": to_checksum_address(to), "value": wei, "gas": 21_000, "from": self.address, "nonce": 0, "chainId": self.chain.chain_id}
        tx.update(self._fees())
        return self._sign_and_send(tx, True)

    def _fees(self) -> dict[str, int]:
        base = self.chain.w3.eth.get_block("latest").get("baseFeePerGas", 0)
        tip = 10**9
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    def _sign_and_send(self, tx: dict, wait: bool) -> Any:
        w3 = self.chain.w3
        with self._lock:
            nonce = self.chain._nonces.get(self.address)
            if nonce is None:
                nonce = w3.eth.get_transaction_count(self.address, "pending")
            tx["nonce"] = nonce
            signed = self.account.sign_transaction(tx)
            try:
                tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
            except REVERTS as exc:
                raise decode_revert(exc) from None
            except (Web3RPCError, ValueError) as exc:
                self.renumber()
                raise ChainError(f"transaction rejected: {exc}") from exc
            self.chain._nonces[self.address] = nonce + 1
        if not wait:
            return tx_hash
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120, poll_latency=0.05)
        if receipt["status"] != 1:
            raise ContractRevert("Reverted", {"tx": tx_hash.hex()})
        return receipt


class Anvil:
    """A throwaway anvil node on a free loopback port (``with Anvil() as url: ...``)."""

    def __init__(self, chain_id: int = 31337, block_time: int | None = None):
        self.chain_id = chain_id
        self.block_time = block_time
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> str:
        cmd = anvil_command(self.port, self.chain_id, block_time=self.block_time)
        try:
            self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError as exc:  # not there, not executable
            raise ChainError(f"cannot run anvil at {cmd[0]}: {exc}") from exc
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ChainError(f"anvil exited: {self.process.stderr.read().decode(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    if Web3(Web3.HTTPProvider(self.url)).is_connected():
                        return self.url
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ChainError("anvil did not start within 30 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
