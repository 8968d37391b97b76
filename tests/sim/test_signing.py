"""Request authentication against the docs' worked examples (spot seed HMAC example, futures
v3 demo API wallet) and ccxt's own v3 signer; every rejection path gives the documented code."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

import ccxt.async_support as ccxt_async
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from astra.sim.signing import (
    Authenticator,
    AuthError,
    NonceWindow,
    check_timestamp,
    recover_v3_signer,
    split_signed,
    verify_hmac,
)

# The spot seed's "Example of POST /api/v1/order".
API_KEY = "4452d7e2ed4da80b74105e02d06328c71a34488c9fdd60a5a0900d42d584b795"
SECRET = "fdde510a2b71fa43a43bff3e3cf7819c8c66df34633d338050f4f59664b3b313"
PAYLOAD = (
    "symbol=BNBUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=5&price=1.1"
    "&recvWindow=5000&timestamp=1756187806000"
)
SIGNATURE = "e09169bf6c02ec4b29fa1bdc3a967f92c8c6cfcde0551ba1d477b2d3cf4c51b0"
TS = 1756187806000
MIX_QUERY = "symbol=BNBUSDT&side=BUY&type=LIMIT&timeInForce=GTC"  # the mixed form's two parts
MIX_BODY = "quantity=5&price=1.1&recvWindow=5000&timestamp=1756187806000"
# The futures v3 docs' demo API wallet.
USER = "0x63DD5aCC6b1aa0f563956C0e534DD30B6dcF7C4e"
SIGNER = "0x21cF8Ae13Bb72632562c6Fff438652Ba1a151bb0"
PRIVATE_KEY = "0x4fd0a42218f3eae43a6ce26d22544e986139a01e5b34a62db53757ffca81bae1"
OTHER_KEY = "0x" + "11" * 32
NOW_US = 1_748_310_859_508_867  # the docs' example nonce


@dataclass
class Cred:
    api_secret: str
    user: str
    signer: str


class Registry:
    def __init__(self, *creds: Cred, keys: dict[str, Cred] | None = None) -> None:
        self.keys = keys or {}
        self.signers = {c.signer.lower(): c for c in creds}

    def by_api_key(self, key: str) -> Cred | None:
        return self.keys.get(key)

    def by_signer(self, address: str) -> Cred | None:
        return self.signers.get(address)


CRED = Cred(SECRET, USER, SIGNER)


def auth(**kwargs) -> Authenticator:
    return Authenticator(Registry(CRED, keys={API_KEY: CRED}), **kwargs)


def code_of(call, *args, **kwargs) -> tuple[int, int, str]:
    with pytest.raises(AuthError) as info:
        call(*args, **kwargs)
    return info.value.code, info.value.status, info.value.msg


def sign_hmac(payload: str, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def v1_body(payload: str, now_ms: int = TS + 100, key: str | None = API_KEY, secret=SECRET):
    headers = {} if key is None else {"X-MBX-APIKEY": key}
    body = f"{payload}&signature={sign_hmac(payload, secret)}"
    return auth().v1(headers, "", body, dict(parse_qsl(body)), now_ms)


def sign_v3(params: dict[str, str], key: str = PRIVATE_KEY) -> str:
    """The docs' demo: urlencode the params, sign Message(msg), append the signature."""
    msg = urlencode(params)
    data = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Message": [{"name": "msg", "type": "string"}],
        },
        "primaryType": "Message",
        "domain": {
            "name": "AsterSignTransaction",
            "version": "1",
            "chainId": 1666,
            "verifyingContract": "0x0000000000000000000000000000000000000000",
        },
        "message": {"msg": msg},
    }
    signed = Account.sign_message(encode_typed_data(full_message=data), private_key=key)
    return f"{msg}&signature=0x{signed.signature.hex()}"


def order_params(nonce: int = NOW_US, **extra: str) -> dict[str, str]:
    params = {"symbol": "ASTERUSDT", "type": "LIMIT", "side": "BUY", "quantity": "10"}
    return {**params, "price": "0.6", "nonce": str(nonce), "user": USER, "signer": SIGNER, **extra}


def v3_body(body: str, authenticator: Authenticator | None = None, now_us: int = NOW_US):
    return (authenticator or auth()).v3("", body, dict(parse_qsl(body)), now_us)


# -- HMAC (v1) ------------------------------------------------------------------------------


def test_seed_hmac_example():
    assert sign_hmac(PAYLOAD) == SIGNATURE
    assert verify_hmac(SECRET, PAYLOAD, SIGNATURE)
    assert verify_hmac(SECRET, PAYLOAD, SIGNATURE.upper())
    assert not verify_hmac(SECRET, PAYLOAD + "0", SIGNATURE)
    assert not verify_hmac(SECRET, PAYLOAD, "é" * 64)  # non-ASCII: False, not TypeError


def test_split_signed_body_query_and_mixed():
    assert split_signed("", f"{PAYLOAD}&signature={SIGNATURE}") == (PAYLOAD, SIGNATURE)
    assert split_signed(f"{PAYLOAD}&signature={SIGNATURE}", "") == (PAYLOAD, SIGNATURE)
    query, body = MIX_QUERY, MIX_BODY
    assert f"{query}&{body}" == PAYLOAD
    # totalParams = query + body, no separator; the signature may sit in either part.
    assert split_signed(query, f"{body}&signature=ab") == (query + body, "ab")
    assert split_signed(f"{query}&signature=ab", body) == (query + body, "ab")
    assert split_signed("", "a=%2C&signature=ab&b=1") == ("a=%2C&b=1", "ab")  # raw, in place


@pytest.mark.parametrize("form", ["body", "query", "mixed"])
def test_v1_accepts_seed_example(form):
    headers = {"x-mbx-apikey": API_KEY}  # header names are case-insensitive
    params = dict(parse_qsl(PAYLOAD))
    if form == "body":
        query, body = "", f"{PAYLOAD}&signature={SIGNATURE}"
    elif form == "query":
        query, body = f"{PAYLOAD}&signature={SIGNATURE}", ""
    else:
        query, body = MIX_QUERY, f"{MIX_BODY}&signature={sign_hmac(MIX_QUERY + MIX_BODY)}"
    assert auth().v1(headers, query, body, params, TS + 100) is CRED


def test_v1_timestamp_window():
    assert v1_body(PAYLOAD, now_ms=TS + 5000) is CRED  # serverTime - timestamp <= recvWindow
    assert v1_body(PAYLOAD, now_ms=TS - 999) is CRED  # timestamp < serverTime + 1000
    stale = (-1021, 400, "Timestamp for this request is outside of the recvWindow.")
    ahead = (-1021, 400, "Timestamp for this request was 1000ms ahead of the server's time.")
    assert code_of(v1_body, PAYLOAD, now_ms=TS + 5001) == stale
    assert code_of(v1_body, PAYLOAD, now_ms=TS - 1000) == ahead
    wide = PAYLOAD.replace("recvWindow=5000", "recvWindow=60000")
    assert v1_body(wide, now_ms=TS + 60000) is CRED
    too_wide = PAYLOAD.replace("recvWindow=5000", "recvWindow=60001")
    assert code_of(v1_body, too_wide) == (
        -1130, 400, "Data sent for parameter 'recvWindow' is not valid."
    )  # fmt: skip
    assert check_timestamp({"timestamp": str(TS)}, TS + 5000) == TS  # recvWindow defaults 5000
    assert code_of(check_timestamp, {"timestamp": str(TS)}, TS + 5001)[0] == -1021


def test_v1_rejections():
    bad_sig = (-1022, 400, "Signature for this request is not valid.")
    tampered = PAYLOAD.replace("quantity=5", "quantity=6")
    headers = {"X-MBX-APIKEY": API_KEY}
    body = f"{tampered}&signature={SIGNATURE}"
    assert code_of(auth().v1, headers, "", body, dict(parse_qsl(body)), TS) == bad_sig
    assert code_of(v1_body, PAYLOAD, secret="0" * 64) == bad_sig
    garbage = f"{PAYLOAD}&signature=é"
    assert code_of(auth().v1, headers, "", garbage, dict(parse_qsl(garbage)), TS) == bad_sig
    assert code_of(v1_body, PAYLOAD, key=None) == (-2014, 401, "API-key format invalid.")
    assert code_of(v1_body, PAYLOAD, key="") == (-2014, 401, "API-key format invalid.")
    assert code_of(v1_body, PAYLOAD, key="not a key!") == (-2014, 401, "API-key format invalid.")
    assert code_of(v1_body, PAYLOAD, key="A" * 64) == (
        -2015, 401, "Invalid API-key, IP, or permissions for action."
    )  # fmt: skip
    missing_sig = "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."
    assert code_of(auth().v1, headers, "", PAYLOAD, {}, TS) == (-1102, 400, missing_sig)
    assert code_of(auth().v1, headers, PAYLOAD + "&signature=", "", {}, TS)[0] == -1102
    assert code_of(auth().v1, headers, "a=1&signature=x", "signature=y", {}, TS)[0] == -1101
    no_ts = "symbol=BNBUSDT"
    assert code_of(v1_body, no_ts) == (
        -1102, 400, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."
    )  # fmt: skip
    assert code_of(v1_body, PAYLOAD.replace(str(TS), "17561878o6000"))[0] == -1100
    assert code_of(v1_body, PAYLOAD.replace("recvWindow=5000", "recvWindow=-1"))[0] == -1100


def test_api_key_only():
    assert auth().api_key_only({"X-MBX-APIKEY": API_KEY}) is CRED
    assert code_of(auth().api_key_only, {})[:2] == (-2014, 401)
    assert code_of(auth().api_key_only, {"X-MBX-APIKEY": "b" * 64})[:2] == (-2015, 401)


# -- EIP-712 (v3) ---------------------------------------------------------------------------


def test_recover_docs_demo_signer():
    msg, _, signature = sign_v3(order_params()).rpartition("&signature=")
    assert recover_v3_signer(msg, signature) == SIGNER  # checksummed
    assert recover_v3_signer(msg, signature[2:]) == SIGNER  # no 0x, as HexBytes.hex() gives
    assert recover_v3_signer(msg + "&x=1", signature) != SIGNER
    for garbage in ("", "0x", "0xzz", "0x" + "ab" * 64, "0x" + "ff" * 65, "é" * 130):
        assert code_of(recover_v3_signer, msg, garbage)[:2] == (-1022, 400)


def test_v3_docs_demo_body_and_query():
    body = sign_v3(order_params())
    assert v3_body(body) is CRED
    query = sign_v3(order_params(NOW_US + 1))
    assert auth().v3(query, "", dict(parse_qsl(query)), NOW_US) is CRED


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_v3_accepts_ccxt_signature(method):
    ex = ccxt_async.aster({"privateKey": PRIVATE_KEY})
    try:
        params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.1"}
        signed = ex.sign("v3/order", ["fapiPrivate"], method, {**params, "price": "100"})
    finally:
        await ex.close()
    query = urlsplit(signed["url"]).query
    body = signed["body"] or ""
    assert (query if method == "GET" else body).startswith("nonce=")
    params = dict(parse_qsl(query + body))
    # ccxt sends user = the address of the key it holds: here the API wallet itself.
    assert params["user"].lower() == params["signer"].lower() == SIGNER.lower()
    nonce = int(params["nonce"])
    authenticator = auth()
    assert authenticator.v3(query, body, params, nonce + 1000) is CRED
    assert authenticator.nonces.held(USER) == [nonce]  # the account's user, not the param


def test_v3_rejections():
    bad_sig = (-1022, 400, "Signature for this request is not valid.")
    tampered = sign_v3(order_params()).replace("price=0.6", "price=0.5")
    assert code_of(v3_body, tampered) == bad_sig
    assert code_of(v3_body, sign_v3(order_params(), key=OTHER_KEY)) == bad_sig
    garbage = urlencode(order_params()) + "&signature=0xdeadbeef"
    assert code_of(v3_body, garbage) == bad_sig
    rejected = (-2015, 401, "Invalid API-key, IP, or permissions for action.")
    stranger = Account.from_key(OTHER_KEY).address
    assert code_of(v3_body, sign_v3(order_params(signer=stranger), key=OTHER_KEY)) == rejected
    assert code_of(v3_body, sign_v3(order_params(user=stranger))) == rejected
    for name in ("user", "signer", "nonce"):
        params = order_params()
        del params[name]
        assert code_of(v3_body, sign_v3(params)) == (
            -1102, 400, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
        )  # fmt: skip
    assert code_of(v3_body, urlencode(order_params()))[:2] == (-1102, 400)  # no signature
    assert code_of(v3_body, sign_v3(order_params(signer="0x21cF")))[0] == -1102
    assert code_of(v3_body, sign_v3(order_params(nonce="17483e10")))[0] == -1100


def test_v3_nonce_rules():
    outside = (-1021, 400, "Timestamp for this request is outside of the recvWindow.")
    expired = (-4225, 400, "Nonce Expired")
    authenticator = auth(nonces=NonceWindow(size=3))
    assert v3_body(sign_v3(order_params(NOW_US - 10_000_000)), authenticator) is CRED
    assert v3_body(sign_v3(order_params(NOW_US + 10_000_000)), authenticator) is CRED
    assert code_of(v3_body, sign_v3(order_params(NOW_US - 10_000_001)), authenticator) == outside
    assert code_of(v3_body, sign_v3(order_params(NOW_US + 10_000_001)), authenticator) == outside
    replay = sign_v3(order_params(NOW_US + 5))
    assert v3_body(replay, authenticator) is CRED
    assert code_of(v3_body, replay, authenticator) == expired  # duplicate
    # The window (size 3) is full: [NOW-10s, NOW+5, NOW+10s]; below its minimum is expired.
    assert code_of(v3_body, sign_v3(order_params(NOW_US - 10_000_000)), authenticator) == expired
    assert code_of(v3_body, sign_v3(order_params(NOW_US - 10_000_001)), authenticator) == outside
    assert v3_body(sign_v3(order_params(NOW_US)), authenticator) is CRED  # evicts the minimum
    assert authenticator.nonces.held(USER) == [NOW_US, NOW_US + 5, NOW_US + 10_000_000]
    # A forged request does not consume its nonce.
    forged = sign_v3(order_params(NOW_US + 7), key=OTHER_KEY)
    assert code_of(v3_body, forged, authenticator)[0] == -1022
    assert v3_body(sign_v3(order_params(NOW_US + 7)), authenticator) is CRED


def test_nonce_window_evicts_smallest_so_replays_stay_caught():
    window = NonceWindow(size=2, tolerance_us=100, clock_us=lambda: 1000)
    for nonce in (1010, 990, 1000):  # 990 is evicted, not 1010 (the first to arrive)
        window.accept("0xAbC", nonce)
    assert window.held("0xabc") == [1000, 1010]
    for nonce in (990, 1000, 1010):
        assert code_of(window.accept, "0xABC", nonce)[0] == -4225
    assert code_of(window.accept, "0xabc", 1101)[0] == -1021  # injected clock: 1000 ± 100
    window.accept("0xdef", 990)  # per user


def test_v3_user_optional_when_configured():
    params = order_params()
    del params["user"]  # the current v3 docs' demo sends only nonce and signer
    assert v3_body(sign_v3(params), auth(require_user=False)) is CRED
