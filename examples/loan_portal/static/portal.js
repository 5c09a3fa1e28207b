// Lendly: this browser as an idv "device" factor with WebCrypto.
// An ECDSA P-256 key pair is generated with extractable: false (the private key never leaves the
// browser's key store), kept in IndexedDB, and its SPKI public key enrolled as PEM (alg ES256).
// WebCrypto signs as raw r||s (IEEE P1363, 64 bytes); idv's ES256 device proofs are DER
// (API.md), so rawToDer() converts before base64url encoding.
"use strict";

// Raw r||s (2 x n bytes) -> DER SEQUENCE { INTEGER r, INTEGER s } (X.690, RFC 3279 §2.2.3).
function derInteger(bytes) {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++; // minimal encoding: strip leading zeros
  let body = bytes.slice(i);
  if (body[0] & 0x80) { // high bit set: prepend 0x00 so the INTEGER stays positive
    const padded = new Uint8Array(body.length + 1);
    padded.set(body, 1);
    body = padded;
  }
  const out = new Uint8Array(body.length + 2);
  out[0] = 0x02;
  out[1] = body.length;
  out.set(body, 2);
  return out;
}

function rawToDer(raw) {
  raw = new Uint8Array(raw);
  if (raw.length === 0 || raw.length % 2 !== 0 || raw.length > 132) {
    throw new Error("raw ECDSA signature must be r||s of equal halves");
  }
  const half = raw.length / 2;
  const r = derInteger(raw.slice(0, half));
  const s = derInteger(raw.slice(half));
  const len = r.length + s.length;
  const header = len < 0x80 ? [0x30, len] : [0x30, 0x81, len]; // P-521 needs the long form
  const out = new Uint8Array(header.length + len);
  out.set(header, 0);
  out.set(r, header.length);
  out.set(s, header.length + r.length);
  return out;
}

function b64url(bytes) {
  let bin = "";
  new Uint8Array(bytes).forEach((b) => { bin += String.fromCharCode(b); });
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function spkiPem(spki) {
  const b64 = btoa(String.fromCharCode(...new Uint8Array(spki)));
  return "-----BEGIN PUBLIC KEY-----\n" + b64.match(/.{1,64}/g).join("\n") + "\n-----END PUBLIC KEY-----\n";
}

// -- IndexedDB: one key record per subject --------------------------------------------------------
function db() {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open("lendly-idv", 1);
    open.onupgradeneeded = () => open.result.createObjectStore("keys");
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
}

async function store(mode, fn) {
  const conn = await db();
  return new Promise((resolve, reject) => {
    const tx = conn.transaction("keys", mode);
    const req = fn(tx.objectStore("keys"));
    tx.oncomplete = () => resolve(req.result);
    tx.onerror = () => reject(tx.error);
  });
}

const loadKey = (subject) => store("readonly", (s) => s.get(subject));
const saveKey = (subject, record) => store("readwrite", (s) => s.put(record, subject));

async function postJson(url, body) {
  const r = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.message || r.status);
  return data;
}

async function bindBrowser(subject) {
  const pair = await crypto.subtle.generateKey(
    { name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
  const spki = await crypto.subtle.exportKey("spki", pair.publicKey); // public keys always export
  const label = (navigator.userAgentData && navigator.userAgentData.brands.length
    ? navigator.userAgentData.brands[navigator.userAgentData.brands.length - 1].brand
    : "browser") + " · " + (navigator.platform || "?");
  const { factor_id } = await postJson("/security/device", { public_key: spkiPem(spki), label });
  await saveKey(subject, { privateKey: pair.privateKey, factorId: factor_id });
  location.reload();
}

async function signWithBrowser(subject) {
  const record = await loadKey(subject);
  const { challenge } = await postJson("/verify/challenge", { factor: "device" });
  const raw = await crypto.subtle.sign(
    { name: "ECDSA", hash: "SHA-256" }, record.privateKey, new TextEncoder().encode(challenge));
  const signature = b64url(rawToDer(raw));
  const { redirect } = await postJson("/verify/prove",
    { factor: "device", factor_id: record.factorId, signature });
  location.href = redirect;
}

// -- Passkeys (WebAuthn): idv's options in their JSON form, the browser's answers as toJSON() ----
async function addPasskey() {
  const { factor_id, options } = await postJson("/security/passkey", {});
  const credential = await navigator.credentials.create(
    { publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options) });
  const { redirect } = await postJson("/security/passkey/finish",
    { factor_id, credential: credential.toJSON() });
  location.href = redirect;
}

async function usePasskey() {
  const { options } = await postJson("/verify/challenge", { factor: "passkey" });
  const credential = await navigator.credentials.get(
    { publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options) });
  const { redirect } = await postJson("/verify/prove",
    { factor: "passkey", credential: credential.toJSON() });
  location.href = redirect;
}

const passkeysWork = () => typeof PublicKeyCredential !== "undefined"
  && typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function";

function wireButton(el, action) {
  el.hidden = false;
  el.addEventListener("click", () => { el.disabled = true; action().catch((e) => { el.disabled = false; showError(e); }); });
}

// The person's time zone, so the server words hold ends in local time (idv_client.messages).
function rememberTimeZone() {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (zone && /^[A-Za-z][A-Za-z0-9_+\-/]{0,60}$/.test(zone)) {
    document.cookie = "tz=" + zone + "; path=/; max-age=31536000; SameSite=Lax";
  }
}

// A failure shown on the page (the server's message, already in the page's language).
function showError(err) {
  const box = document.getElementById("js-error");
  box.textContent = err && err.message ? err.message : String(err);
  box.hidden = false;
}

async function wire() {
  rememberTimeZone();
  for (const el of document.querySelectorAll("[data-device-sign]")) {
    const subject = el.dataset.deviceSign;
    const record = await loadKey(subject);
    if (record) {
      el.hidden = false;
      el.addEventListener("click", () => { el.disabled = true; signWithBrowser(subject).catch((e) => { el.disabled = false; showError(e); }); });
    } else {
      document.querySelector(`[data-device-missing="${subject}"]`).hidden = false;
    }
  }
  for (const el of document.querySelectorAll("[data-device-bound]")) {
    if (await loadKey(el.dataset.deviceBound)) el.hidden = false;
  }
  for (const el of document.querySelectorAll("[data-device-bind]")) {
    const subject = el.dataset.deviceBind;
    if (await loadKey(subject)) continue;
    const button = el.querySelector("#bind-browser");
    el.hidden = false;
    button.addEventListener("click", () => { button.disabled = true; bindBrowser(subject).catch((e) => { button.disabled = false; showError(e); }); });
  }
  // Recovery codes go on paper, not on the phone: the print stylesheet shows only the codes.
  const print = document.getElementById("print-codes");
  if (print) print.addEventListener("click", () => window.print());
  if (passkeysWork()) {
    for (const el of document.querySelectorAll("[data-passkey-sign]")) wireButton(el, usePasskey);
    for (const el of document.querySelectorAll("[data-passkey-bind]")) {
      el.hidden = false;
      wireButton(el.querySelector("button"), addPasskey);
    }
  }
  document.body.dataset.ready = "1";
}

if (typeof document !== "undefined" && document.readyState !== "loading") wire();
else if (typeof document !== "undefined") document.addEventListener("DOMContentLoaded", wire);
