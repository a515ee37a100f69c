// A person's federation pseudonym from their identifier, derived in the steward's browser.
//
// The same client steps as pseudonymisation/client.py (RFC 9497 OPRF, mode 0,
// ristretto255-SHA512): normalise the identifier (pseudonymisation/identifiers.py), then
// blind, have the service multiply by its key (through the portal's relay, which sees only
// the blinded element, a uniformly random group element), unblind and hash. The group
// arithmetic, hash-to-group and the OPRF itself are @noble/curves' (pinned and verified by
// tre/portal/web/vendor.py, served from /static/vendor/); this file is the application
// only. The identifier field has no name: the form never sends it, and no request carries
// it; the portal receives the pseudonym only.
const LIBRARY = "/static/vendor/@noble/curves/ed25519.js";
const INPUT_LABEL = "tre-person-identifier-v1";
// Started at once, awaited on use: a portal without its vendor folder says so in the page.
const library = import(LIBRARY).then((module) => module.ristretto255_oprf.oprf, (cause) => {
  throw new Error(`the OPRF library ${LIBRARY} did not load: the portal's install step `
                  + "(python -m tre.portal.web.vendor) has not run", { cause });
});

const utf8 = (text) => new TextEncoder().encode(text);
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};
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

// The input pseudonymisation/identifiers.py's Identifier.canonical() builds.
function canonical(system, value) {
  const field = (text) => { const p = utf8(text); return concat(Uint8Array.of(p.length >> 8, p.length & 255), p); };
  return concat(...[INPUT_LABEL, system, value].map(field));
}

// The pseudonym `ps_<32 hex>` of (system, value); `evaluate(blinded)` returns skS·blinded.
async function pseudonym(system, value, evaluate) {
  const normalise = NORMALISE[system];
  const normalised = normalise && value.trim() ? normalise(value) : null;
  if (normalised === null) throw new RangeError("invalid identifier");
  const oprf = await library;
  const input = canonical(system, normalised);
  const { blind, blinded } = oprf.blind(input);
  const output = oprf.finalize(input, blind, unb64(await evaluate(b64(blinded))));
  return "ps_" + [...output.slice(0, 16)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// -- the widget: `[data-pseudonymise=<id of the field to fill>]` -----------------------
// A module runs once the document is parsed: the widgets are all there.
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
  library.catch((error) => { problem.textContent = `${widget.dataset.unavailable} ${error.message}`; });
}
