// A person's federation pseudonym from their identifier, derived in the steward's browser.
//
// The same client steps as pseudonymisation/client.py (RFC 9497 OPRF, mode 0,
// ristretto255-SHA512): normalise the identifier (pseudonymisation/identifiers.py), hash
// it to the group, blind it with a random scalar, have the service multiply it by its key
// (through the portal's relay, which sees only the blinded element, a uniformly random
// group element), unblind and hash. The identifier field has no name: the form never
// sends it, and no request carries it; the portal receives the pseudonym only.
"use strict";
(() => {
  const P = 2n ** 255n - 19n;
  const L = 2n ** 252n + 27742317777372353535851937790883648493n;
  const D = 37095705934669439343138083508754565189542113879843219016388785533085940283555n;
  const SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752n;
  const SQRT_AD_MINUS_ONE = 25063068953384623474111414158702152701244531502492656460079210482610430750235n;
  const INVSQRT_A_MINUS_D = 54469307008909316920995813868745141605393597292927456921205312896311721017578n;
  const ONE_MINUS_D_SQ = 1159843021668779879193775521855586647937357759715417654439879720876111806838n;
  const D_MINUS_ONE_SQ = 40440834346308536858101042469323190826248399146238708352240133220865137265952n;
  const CONTEXT = "OPRFV1-\x00-ristretto255-SHA512";
  const INPUT_LABEL = "tre-person-identifier-v1";

  // -- field and scalar arithmetic ---------------------------------------------------
  const mod = (a, m = P) => ((a % m) + m) % m;
  const pow = (b, e, m = P) => {
    let r = 1n;
    b = mod(b, m);
    while (e > 0n) {
      if (e & 1n) r = (r * b) % m;
      b = (b * b) % m;
      e >>= 1n;
    }
    return r;
  };
  const isNeg = (x) => (mod(x) & 1n) === 1n;
  const abs = (x) => (isNeg(x) ? mod(-x) : mod(x));
  const leInt = (bytes) => bytes.reduceRight((acc, b) => (acc << 8n) | BigInt(b), 0n);
  const leBytes = (n) => Uint8Array.from({ length: 32 }, (_, i) => Number((n >> BigInt(8 * i)) & 255n));

  // RFC 9496 SQRT_RATIO_M1: (was_square, |sqrt(u/v)| or |sqrt(i·u/v)|)
  function sqrtRatio(u, v) {
    const v3 = mod(v * v * v);
    const v7 = mod(v3 * v3 * v);
    let r = mod(u * v3 * pow(u * v7, (P - 5n) / 8n));
    const check = mod(v * r * r);
    const correct = check === mod(u);
    const flipped = check === mod(-u);
    const flippedI = check === mod(-u * SQRT_M1);
    if (flipped || flippedI) r = mod(r * SQRT_M1);
    return [correct || flipped, abs(r)];
  }

  // -- ristretto255 over extended Edwards coordinates (X, Y, Z, T) -----------------
  function add([x1, y1, z1, t1], [x2, y2, z2, t2]) {
    const a = mod((y1 - x1) * (y2 - x2));
    const b = mod((y1 + x1) * (y2 + x2));
    const c = mod(t1 * 2n * D * t2);
    const d = mod(z1 * 2n * z2);
    const e = b - a, f = d - c, g = d + c, h = b + a;
    return [mod(e * f), mod(g * h), mod(f * g), mod(e * h)];
  }

  function multiply(point, scalar) {
    let result = [0n, 1n, 1n, 0n];
    for (let bit = 255n; bit >= 0n; bit--) {
      result = add(result, result);
      if ((scalar >> bit) & 1n) result = add(result, point);
    }
    return result;
  }

  function elligator(t) {
    const r = mod(SQRT_M1 * t * t);
    const u = mod((r + 1n) * ONE_MINUS_D_SQ);
    const v = mod((-1n - r * D) * (r + D));
    let [square, s] = sqrtRatio(u, v);
    const sPrime = mod(-abs(s * t));
    if (!square) s = sPrime;
    const c = square ? mod(-1n) : r;
    const n = mod(c * (r - 1n) * D_MINUS_ONE_SQ - v);
    const w0 = mod(2n * s * v), w1 = mod(n * SQRT_AD_MINUS_ONE);
    const w2 = mod(1n - s * s), w3 = mod(1n + s * s);
    return [mod(w0 * w3), mod(w2 * w1), mod(w1 * w3), mod(w0 * w2)];
  }

  function fromUniform(bytes) { // the one-way map of 64 uniform bytes
    const half = (b) => { const c = b.slice(); c[31] &= 127; return mod(leInt(c)); };
    return add(elligator(half(bytes.slice(0, 32))), elligator(half(bytes.slice(32, 64))));
  }

  function encode([x0, y0, z0, t0]) {
    const u1 = mod((z0 + y0) * (z0 - y0));
    const u2 = mod(x0 * y0);
    const [, invsqrt] = sqrtRatio(1n, mod(u1 * u2 * u2));
    const den1 = mod(invsqrt * u1), den2 = mod(invsqrt * u2);
    const zInv = mod(den1 * den2 * t0);
    const rotate = isNeg(t0 * zInv);
    const x = rotate ? mod(y0 * SQRT_M1) : x0;
    let y = rotate ? mod(x0 * SQRT_M1) : y0;
    const denInv = rotate ? mod(den1 * INVSQRT_A_MINUS_D) : den2;
    if (isNeg(x * zInv)) y = mod(-y);
    return leBytes(abs(denInv * (z0 - y)));
  }

  function decode(bytes) {
    const s = leInt(bytes);
    if (bytes.length !== 32 || s >= P || isNeg(s) || !leBytes(s).every((b, i) => b === bytes[i])) {
      throw new Error("the service answered a non-canonical element");
    }
    const ss = mod(s * s);
    const u1 = mod(1n - ss), u2 = mod(1n + ss);
    const u2sq = mod(u2 * u2);
    const v = mod(-(D * u1 * u1) - u2sq);
    const [square, invsqrt] = sqrtRatio(1n, mod(v * u2sq));
    const denX = mod(invsqrt * u2), denY = mod(invsqrt * denX * v);
    const x = abs(2n * s * denX), y = mod(u1 * denY), t = mod(x * y);
    if (!square || isNeg(t) || y === 0n) throw new Error("the service answered an invalid element");
    return [x, y, 1n, t];
  }

  // -- hashing -------------------------------------------------------------------------
  const utf8 = (text) => new TextEncoder().encode(text);
  const concat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  };
  const i2osp = (value, length) => Uint8Array.from({ length }, (_, i) => (value >> (8 * (length - 1 - i))) & 255);
  const sha512 = async (data) => new Uint8Array(await crypto.subtle.digest("SHA-512", data));

  async function expandXmd(msg, dst) { // RFC 9380 §5.3.1, SHA-512, 64 bytes out
    const dstPrime = concat(dst, i2osp(dst.length, 1));
    const b0 = await sha512(concat(new Uint8Array(128), msg, i2osp(64, 2), i2osp(0, 1), dstPrime));
    return sha512(concat(b0, i2osp(1, 1), dstPrime));
  }

  const b64 = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const unb64 = (text) => Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));

  // -- identifiers, as pseudonymisation/identifiers.py normalises them -----------------
  const CORSICA = { "2A": "19", "2B": "18" };
  function frenchIns(value) {
    const compact = value.replace(/\s+/g, "").toUpperCase();
    if (!/^[1-8][0-9]{4}(?:[0-9]{2}|2A|2B)[0-9]{8}$/.test(compact)) return null;
    const number = BigInt(compact.slice(0, 5) + (CORSICA[compact.slice(5, 7)] || compact.slice(5, 7)) + compact.slice(7, 13));
    return BigInt(compact.slice(13)) === 97n - (number % 97n) ? compact : null;
  }
  function nhsNumber(value) {
    const compact = value.replace(/\s+/g, "").replace(/-/g, "");
    if (!/^[0-9]{10}$/.test(compact)) return null;
    const total = [...compact.slice(0, 9)].reduce((n, d, i) => n + Number(d) * (10 - i), 0);
    const check = (11 - (total % 11)) % 11;
    return check !== 10 && check === Number(compact[9]) ? compact : null;
  }
  const NORMALISE = {
    "urn:oid:1.2.250.1.213.1.4.8": frenchIns,
    "urn:oid:1.2.250.1.213.1.4.9": frenchIns,
    "https://fhir.nhs.uk/Id/nhs-number": nhsNumber,
    "urn:tre:test-person": (v) => (/^[A-Za-z0-9._-]{1,64}$/.test(v.trim()) ? v.trim() : null),
  };

  function canonical(system, value) {
    return concat(...[INPUT_LABEL, system, value].map(utf8).map((p) => concat(i2osp(p.length, 2), p)));
  }

  // The pseudonym `ps_<32 hex>` of (system, value); `evaluate(blinded)` returns skS·blinded.
  async function pseudonym(system, value, evaluate) {
    const normalise = NORMALISE[system];
    const normalised = normalise && value.trim() ? normalise(value) : null;
    if (normalised === null) throw new RangeError("invalid identifier");
    const input = canonical(system, normalised);
    const element = fromUniform(await expandXmd(input, utf8("HashToGroup-" + CONTEXT)));
    let blind = 0n;
    while (blind === 0n) blind = mod(leInt(crypto.getRandomValues(new Uint8Array(64))), L);
    const evaluated = decode(unb64(await evaluate(b64(encode(multiply(element, blind))))));
    const unblinded = encode(multiply(evaluated, pow(blind, L - 2n, L)));
    const output = await sha512(concat(i2osp(input.length, 2), input, i2osp(32, 2), unblinded, utf8("Finalize")));
    return "ps_" + [...output.slice(0, 16)].map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  // -- the widget: `[data-pseudonymise=<id of the field to fill>]` -----------------------
  document.addEventListener("DOMContentLoaded", () => {
    for (const widget of document.querySelectorAll("[data-pseudonymise]")) {
      widget.hidden = false;
      const target = document.getElementById(widget.dataset.pseudonymise);
      const system = widget.querySelector("select");
      const value = widget.querySelector("input");
      const problem = widget.querySelector("[role=alert]");
      const evaluate = async (blinded) => {
        const resp = await fetch(widget.dataset.relay, {
          method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": widget.dataset.csrf },
          body: JSON.stringify({ blinded }),
        });
        const body = await resp.json().catch(() => ({}));
        if (!resp.ok) throw new Error(body.detail || resp.statusText);
        return body.evaluated;
      };
      widget.querySelector("button").addEventListener("click", async () => {
        problem.textContent = "";
        try {
          target.value = await pseudonym(system.value, value.value, evaluate);
          value.value = "";
          target.dispatchEvent(new Event("change", { bubbles: true }));
        } catch (error) {
          problem.textContent = error instanceof RangeError ? widget.dataset.invalid
            : `${widget.dataset.unavailable} ${error.message}`;
        }
      });
    }
  });
})();
