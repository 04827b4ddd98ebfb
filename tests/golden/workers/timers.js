// requests: [{"path": "/"}]
// setTimeout ordering, clearTimeout, setInterval, queueMicrotask, promise ordering (order only, never durations).
export default {
  async fetch() {
    const order = [];
    queueMicrotask(() => order.push("microtask"));
    Promise.resolve().then(() => order.push("promise"));
    setTimeout(() => order.push("timeout 20"), 20);
    setTimeout(() => order.push("timeout 0"), 0);
    setTimeout(() => order.push("timeout 10"), 10);
    const cancelled = setTimeout(() => order.push("cancelled"), 5);
    clearTimeout(cancelled);
    setTimeout((a, b) => order.push(`args ${a} ${b}`), 1, "x", "y");
    let ticks = 0;
    await new Promise((resolve) => {
      const id = setInterval(() => {
        ticks++;
        order.push(`interval ${ticks}`);
        if (ticks === 3) { clearInterval(id); resolve(); }
      }, 15);
    });
    await new Promise((resolve) => setTimeout(resolve, 30));
    order.push("end");
    const started = Date.now();
    await scheduler.wait(10);
    return Response.json({ order, ticks, waited: Date.now() - started >= 5, idType: typeof setTimeout(() => {}, 1) });
  },
};
