// A JavaScript tenant: `/` says hello; `/price?api=URL` asks the upstream API for a price (the fetch
// goes through the platform's Outbound Worker, which adds the credential) and answers JSON with a
// signature of the answer (HMAC-SHA-256 under SIGNING_KEY), logging after the response (waitUntil).
async function sign(text, key) {
  const raw = new TextEncoder().encode(key);
  const hmac = await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = await crypto.subtle.sign("HMAC", hmac, new TextEncoder().encode(text));
  return [...new Uint8Array(mac)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    if (url.pathname === "/price") {
      const api = url.searchParams.get("api");
      const answer = await fetch(`${api}/prices?item=tea`);
      const data = await answer.json();
      const body = { tenant: "catalog", item: "tea", priceEur: data.price_eur, authorized: data.authorized, customer: data.customer };
      const text = JSON.stringify(body);
      ctx.waitUntil(Promise.resolve().then(() => console.log(`quoted tea at ${data.price_eur} EUR`)));
      return new Response(text, {
        headers: { "content-type": "application/json", "x-signature": await sign(text, env.SIGNING_KEY || "demo") },
      });
    }
    return new Response(`Hello from a JavaScript tenant (${request.method} ${url.pathname})\n`, {
      headers: { "content-type": "text/plain; charset=utf-8" },
    });
  },
};
