// The demo platform's Tail Worker: after each request it receives the dispatcher's trace item and the
// tenant's (Cloudflare's TraceItem shape) and logs one line for each. With TAIL_SINK_URL set it also
// POSTs the batch there, as a Tail Worker that ships events to a logging service does.
export default {
  async tail(events, env) {
    for (const item of events) {
      const status = item.event && item.event.response ? item.event.response.status : "-";
      console.log(`tail ${item.scriptName} ${item.outcome} ${status}`);
    }
    if (env.TAIL_SINK_URL) {
      const answer = await fetch(env.TAIL_SINK_URL, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(events),
      });
      console.log(`sink ${env.TAIL_SINK_URL} answered ${answer.status}`);
    }
  },
  fetch() {
    return new Response("audit: the demo platform's Tail Worker");
  },
};
