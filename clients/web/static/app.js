// BlobNet's page: a table against bots and models, the model's numbers, a training run's curves.
// The server referees every move; this module only shows its answers and sends the person's clicks.

const SUITS = ["♠", "♥", "♣", "♦"];
const RANKS = "23456789TJQKA";
const BID0 = 52;
const PALETTE = ["#4a8fd8", "#3a9a5b", "#d8704a", "#8a5bd8", "#c0262d", "#2aa3a3"];
const params = new URLSearchParams(location.search);
const DELAY = Number(params.get("delay") ?? 450); // ms between the other seats' moves as they are shown

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== false && value != null) node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.flat().filter((c) => c != null));
  return node;
}

const cardText = (c) => RANKS[c % 13] + SUITS[Math.floor(c / 13)];
const isRed = (c) => [1, 3].includes(Math.floor(c / 13));
const actionText = (a) => (a >= BID0 ? `bid ${a - BID0}` : cardText(a));
const pct = (x) => `${Math.round(100 * x)}%`;
const trumpText = (t) => (t === null ? "no trump" : `${SUITS[t]} trump`);

function cardNode(c, attrs = {}, ...extra) {
  return el("span", { class: `card${isRed(c) ? " red" : ""}`, ...attrs }, cardText(c), ...extra);
}

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error ?? `HTTP ${response.status}`);
  return data;
}

// -- tabs ------------------------------------------------------------------------------------------
let config = null;

function showTab() {
  const tab = location.hash === "#run" ? "run" : "play";
  $("play").hidden = tab !== "play";
  $("run").hidden = tab !== "run";
  $("tab-play").classList.toggle("active", tab === "play");
  $("tab-run").classList.toggle("active", tab === "run");
  if (tab === "run") watchRun();
}

// -- setting up a table ----------------------------------------------------------------------------
function fillSetup() {
  const players = $("players");
  for (let n = 3; n <= 8; n++) players.append(el("option", { value: n, selected: n === 4 }, String(n)));
  players.addEventListener("change", seatChoices);
  $("seat").addEventListener("change", seatChoices);
  seatChoices();
  $("setup").addEventListener("submit", (event) => {
    event.preventDefault();
    newTable();
  });
}

function seatChoices() {
  const n = Number($("players").value);
  const seat = $("seat");
  const mine = Math.min(Number(seat.value || 0), n - 1);
  seat.replaceChildren(...Array.from({ length: n }, (_, s) => el("option", { value: s, selected: s === mine }, `seat ${s}`)));
  const before = [...document.querySelectorAll("#opponents select")].map((s) => s.value);
  const boxes = [];
  for (let s = 0, k = 0; s < n; s++) {
    if (s === mine) continue;
    const options = config.opponents.map((name) => el("option", { value: name, selected: name === (before[k] ?? "heuristic") }, name));
    boxes.push(el("label", {}, `Seat ${s}`, el("select", { "data-seat": s }, options)));
    k++;
  }
  $("opponents").replaceChildren(...boxes);
}

async function newTable() {
  const cards = $("cards").value;
  const request = {
    players: Number($("players").value),
    mode: $("mode").value,
    seat: Number($("seat").value),
    cards: cards === "" ? null : Number(cards),
    opponents: [...document.querySelectorAll("#opponents select")].map((s) => s.value),
  };
  setBusy();
  try {
    // one table at a time from this page: the server holds only a few per session
    if (game) await api("DELETE", `/api/games/${game.id}`).catch(() => null);
    const state = await api("POST", "/api/games", request);
    game = null;
    $("table").hidden = false;
    $("log").replaceChildren();
    await show(state);
  } catch (error) {
    $("table").hidden = false;
    say(error.message, true);
    document.body.dataset.state = "setup";
  }
}

// -- the table -------------------------------------------------------------------------------------
let game = null; // the last state shown
let shown = 0; // moves of the current round already shown

function setBusy() {
  document.body.dataset.state = "busy";
}

function say(text, error = false) {
  $("message").textContent = text;
  $("message").classList.toggle("error", error);
}

const nameOf = (state, s) => (s === state.seat ? "you" : `P${s} ${state.names[s]}`);

async function send(path, body) {
  if (document.body.dataset.state === "busy") return;
  const before = document.body.dataset.state;
  setBusy();
  try {
    await show(await api("POST", `/api/games/${game.id}/${path}`, body));
  } catch (error) {
    document.body.dataset.state = before;
    say(`Not allowed: ${error.message}`, true);
  }
}

async function show(state) {
  const fresh = !game || game.id !== state.id || game.round_index !== state.round_index;
  if (fresh) shown = 0;
  game = state;
  $("table").dataset.game = state.id;
  say("");
  $("result").hidden = true;
  $("replay").hidden = true;
  for (; shown < state.moves.length; shown++) {
    const [seat, action] = state.moves[shown];
    log(`${nameOf(state, seat)} ${action >= BID0 ? "bids " + (action - BID0) : "plays " + cardText(action)}`);
    if (seat === state.seat || DELAY === 0) continue;
    renderTable(state, shown + 1);
    await sleep(DELAY);
  }
  renderTable(state, state.moves.length);
  if (state.scores) await showResult(state);
  document.body.dataset.state = state.over ? "over" : state.scores ? "round-over" : state.legal.length ? "your-turn" : "busy";
}

function log(text) {
  $("log").append(el("li", {}, text));
}

// The table as it was after the first `upto` moves of the round (the others' moves are shown one by one).
function renderTable(state, upto) {
  const moves = state.moves.slice(0, upto);
  const bids = Array(state.players).fill(null);
  const plays = [];
  for (const [seat, action] of moves) {
    if (action >= BID0) bids[seat] = action - BID0;
    else plays.push([seat, action]);
  }
  const done = Math.floor(plays.length / state.players);
  const won = Array(state.players).fill(0);
  state.trick_winners.slice(0, done).forEach((w) => won[w]++);
  const now = upto === state.moves.length;
  const toPlay = now ? state.to_play : null;

  $("info").replaceChildren(
    `${state.mode === "game" ? `Round ${state.round_index + 1} of ${state.rounds}` : "One round"} · ${state.cards} card${state.cards > 1 ? "s" : ""} each · `,
    el("span", { class: "trump" }, trumpText(state.trump)),
    ` · dealer ${nameOf(state, state.dealer)}`,
  );
  $("seats").replaceChildren(
    ...state.names.map((_, s) =>
      el("div", { class: `seat${s === state.seat ? " you" : ""}${s === toPlay ? " to-play" : ""}`, "data-seat": s },
        el("div", {}, el("span", { class: "name" }, nameOf(state, s)), s === state.dealer ? el("span", { class: "dealer" }, "D") : null),
        el("div", { class: "line" }, `bid ${bids[s] ?? "–"} · won ${won[s]}`),
        el("div", { class: "line" }, `score ${state.totals[s]}`)),
    ),
  );

  let trick = plays.slice(done * state.players);
  let note = "";
  let winner = null;
  if (!trick.length && done > 0) {
    trick = plays.slice((done - 1) * state.players, done * state.players);
    winner = state.trick_winners[done - 1];
    note = `trick ${done} to ${nameOf(state, winner)}`;
  } else if (!plays.length) {
    note = state.phase === "bid" || !now ? "bidding" : "";
  }
  $("trick").className = winner === null ? "" : "done";
  $("trick").replaceChildren(...trick.map(([s, c]) => el("div", { class: `played${s === winner ? " winner" : ""}` }, cardNode(c), nameOf(state, s))));
  $("trick-note").textContent = note;

  const mine = now && state.legal.length > 0;
  const legal = new Set(mine ? state.legal : []);
  const hint = $("hints-toggle").checked && now ? state.hint : null;
  const numbers = new Map((hint?.actions ?? []).map((a) => [a.action, a]));
  $("hand").replaceChildren(
    ...sortHand(state.hand).map((c) =>
      el("button", { class: `card${isRed(c) ? " red" : ""}${legal.has(c) ? " legal" : ""}${hint?.choice === c ? " choice" : ""}`,
        "data-action": c, onclick: () => send("move", { action: c }) },
        cardText(c), numbers.has(c) ? el("span", { class: "badge" }, pct(numbers.get(c).share)) : null),
    ),
  );
  const bidding = mine && state.phase === "bid";
  $("bids").replaceChildren(
    ...(bidding ? Array.from({ length: state.cards + 1 }, (_, b) => BID0 + b) : []).map((a) =>
      el("button", { class: `bid${legal.has(a) ? " legal" : ""}${hint?.choice === a ? " choice" : ""}`, "data-action": a,
        onclick: () => send("move", { action: a }) }, `bid ${a - BID0}`),
    ),
  );
  if (now && !state.scores) say(mine ? (bidding ? "Your bid." : "Your card.") : "");
  renderHints(state, now);
}

function sortHand(hand) {
  return [...hand].sort((a, b) => Math.floor(a / 13) - Math.floor(b / 13) || b - a);
}

function renderHints(state, now) {
  const box = $("hints");
  box.hidden = !$("hints-toggle").checked;
  if (box.hidden) return;
  if (!state.model) box.replaceChildren("No model is loaded: start blobnet web with --model PATH to see what it thinks.");
  else if (!now || !state.hint) box.replaceChildren("The model's numbers appear at your decisions.");
  else box.replaceChildren(numbersTable(state.hint, null));
}

function numbersTable(hint, chosen) {
  const rows = hint.actions.map((a) =>
    el("tr", { class: a.action === chosen ? "chosen" : "" },
      el("td", {}, actionText(a.action), a.action === hint.choice ? " ★" : ""),
      el("td", {}, el("span", { class: "bar", style: `width:${60 * a.prior}px` }), pct(a.prior)),
      el("td", {}, el("span", { class: "bar", style: `width:${60 * a.share}px` }), pct(a.share)),
      el("td", {}, a.expected === null ? "–" : a.expected.toFixed(1))),
  );
  return el("table", { class: "numbers" },
    el("tr", {}, el("th", {}, "move"), el("th", {}, "prior"), el("th", {}, "visits"), el("th", {}, "expected points")),
    rows);
}

// -- after a round ---------------------------------------------------------------------------------
async function showResult(state) {
  const rows = state.names.map((_, s) =>
    el("tr", { "data-seat": s },
      el("td", {}, nameOf(state, s)),
      el("td", {}, String(state.bids[s])),
      el("td", {}, String(state.tricks_won[s])),
      el("td", { class: "points", "data-seat": s }, String(state.scores[s])),
      el("td", { class: "total", "data-seat": s }, String(state.totals[s]))),
  );
  const buttons = [];
  if (!state.over) buttons.push(el("button", { id: "next", onclick: () => send("next", {}) }, "Next round"));
  buttons.push(el("button", { id: "again", onclick: newTable }, "New table"));
  const winners = (state.winners ?? []).map((s) => nameOf(state, s)).join(", ");
  const title = state.over ? `${state.mode === "game" ? "Game" : "Round"} over · highest total: ${winners}` : "Round over";
  $("result").replaceChildren(
    el("h3", {}, title),
    el("table", { class: "numbers" },
      el("tr", {}, el("th", {}, "seat"), el("th", {}, "bid"), el("th", {}, "took"), el("th", {}, "points"), el("th", {}, "total")),
      rows),
    ...buttons);
  $("result").hidden = false;
  say(`You bid ${state.bids[state.seat]}, took ${state.tricks_won[state.seat]}: ${state.scores[state.seat]} points.`);
  const record = await api("GET", `/api/games/${state.id}/replay?round=${state.finished - 1}`);
  renderReplay(state, record);
}

function renderReplay(state, record) {
  const steps = [el("h3", {}, "Replay")];
  steps.push(el("div", { class: "hands" }, record.hands.map((hand, s) =>
    el("div", {}, `${nameOf(state, s)}: `, sortHand(hand).map((c) => cardText(c)).join(" ")))));
  let trick = [];
  let decisions = [];
  let tricks = 0;
  const flush = (title) => {
    steps.push(el("div", { class: "replay-step" }, el("div", {}, title),
      el("div", { class: "cards" }, trick), decisions));
    trick = [];
    decisions = [];
  };
  record.moves.forEach(([seat, action], i) => {
    const hint = record.hints[i];
    if (hint) decisions.push(el("details", { open: true }, el("summary", {}, `your ${action >= BID0 ? "bid" : "card"}: ${actionText(action)}${hint.choice === action ? " (the model's choice too)" : ` (the model: ${actionText(hint.choice)})`}`), numbersTable(hint, action)));
    if (action >= BID0) {
      trick.push(el("span", {}, `${nameOf(state, seat)} ${action - BID0}`));
      if (i + 1 === record.moves.length || record.moves[i + 1][1] < BID0) flush("Bids");
      return;
    }
    trick.push(el("span", {}, cardNode(action), ` ${nameOf(state, seat)}`));
    if (trick.length === record.players) {
      flush(`Trick ${tricks + 1}, to ${nameOf(state, record.trick_winners[tricks])}`);
      tricks++;
    }
  });
  $("replay").replaceChildren(...steps);
  $("replay").hidden = false;
}

// -- a training run --------------------------------------------------------------------------------
let events = null;

function watchRun() {
  if (events || !config) return;
  if (!config.run) {
    $("run-status").textContent = "No training run is watched: start blobnet web with --run RUN_DIR.";
    return;
  }
  events = new EventSource("/api/run/events");
  events.onmessage = (message) => renderRun(JSON.parse(message.data));
  events.onerror = () => $("run-status").classList.add("stale");
  events.onopen = () => $("run-status").classList.remove("stale");
}

function clock(seconds) {
  if (seconds === null || seconds === undefined) return "--:--";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const two = (x) => String(x).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(s % 60)}` : `${two(m)}:${two(s % 60)}`;
}

function renderRun(snap) {
  const st = snap.status;
  const parts = [`Run ${snap.run}`];
  let fraction = 0;
  if (st) {
    const of = st.iterations ?? snap.iterations;
    parts.push(st.phase === "done" ? "ended" : `iteration ${st.iteration} of ${of} · ${st.phase} ${st.done}/${st.total}`);
    if (st.phase !== "done") parts.push(`ETA ${clock(st.eta_s)}`);
    fraction = st.phase === "done" ? 1 : of ? (st.iteration - 1 + (st.total ? st.done / st.total : 0)) / of : 0;
    const age = snap.now - st.updated;
    if (st.phase !== "done" && age > 120) parts.push(`no progress for ${clock(age)}`);
  } else {
    parts.push("no status yet (status.json appears when blobnet train starts)");
  }
  $("run-status").replaceChildren(parts.join(" · "), st?.line ? el("div", { class: "line" }, st.line) : null);
  $("run-status").dataset.phase = st?.phase ?? "";
  $("run-progress").firstElementChild.style.width = `${Math.round(100 * Math.min(fraction, 1))}%`;

  const m = snap.metrics;
  const last = (m.iteration ?? []).length;
  const arena = snap.arena.map((a) => el("tr", {}, el("td", {}, `vs ${a.opponent}`), el("td", {}, (a.diff >= 0 ? "+" : "") + a.diff.toFixed(2)),
    el("td", {}, `${a.lo.toFixed(2)} .. ${a.hi.toFixed(2)}`)));
  $("run-arena").replaceChildren(last
    ? el("div", {}, el("h3", {}, `Arena after iteration ${m.iteration[last - 1]}${snap.promoted === null ? "" : snap.promoted ? ": promoted to best.pt" : ": not promoted"}${m.elo?.[last - 1] != null ? ` · Elo ${m.elo[last - 1]}` : ""}`),
      el("table", { class: "numbers" }, el("tr", {}, el("th", {}, "match"), el("th", {}, "points a round"), el("th", {}, "95% interval")), arena))
    : "No iteration has finished yet.");

  const x = m.iteration ?? [];
  const charts = [
    ["Policy loss", [["policy_loss", "#4a8fd8"]]],
    ["Value loss", [["value_loss", "#d8704a"]]],
    ["Self-play rounds per minute", [["rounds_per_min", "#3a9a5b"]]],
    ["Mean batch", [["avg_batch", "#8a5bd8"]]],
    ["Elo", [["elo", "#c0262d"]]],
    ["Points a round in the arena", Object.keys(m).filter((k) => /^vs_.+_diff$/.test(k))
      .map((k, i) => [k, PALETTE[i % PALETTE.length], k.slice(0, -5).replace("_", " ")]), true],
  ];
  $("charts").replaceChildren(...charts.map(([title, series, zero]) =>
    chart(title, x, series.filter(([key]) => m[key]?.some((v) => v !== null)).map(([key, color, label]) =>
      ({ label: label ?? key, color, values: m[key], lo: m[key.replace("_diff", "_lo")], hi: m[key.replace("_diff", "_hi")] })), zero)));
}

// A line chart in SVG: one line per series (and its 95% band where the series has one).
function chart(title, x, series, zero = false) {
  const W = 330, H = 170, L = 44, R = 8, T = 8, B = 22;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  const ys = series.flatMap((s) => [...s.values, ...(s.lo !== s.values ? s.lo ?? [] : []), ...(s.hi !== s.values ? s.hi ?? [] : [])]).filter((v) => v !== null && v !== undefined);
  if (zero) ys.push(0);
  const box = el("div", { class: "chart" }, el("h3", {}, title));
  if (!x.length || !ys.length) {
    box.append(el("div", { class: "legend" }, "no data yet"));
    return box;
  }
  let lo = Math.min(...ys), hi = Math.max(...ys);
  if (hi === lo) { hi += 1; lo -= 1; }
  const x0 = Math.min(...x), x1 = Math.max(...x);
  const px = (v) => L + ((W - L - R) * (x1 === x0 ? 0.5 : (v - x0) / (x1 - x0)));
  const py = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  for (const v of [lo, (lo + hi) / 2, hi]) {
    add("line", { x1: L, x2: W - R, y1: py(v), y2: py(v), stroke: "#e3e6ea" });
    add("text", { x: L - 4, y: py(v) + 4, "text-anchor": "end", "font-size": 10, fill: "#667" }, Number(v.toPrecision(3)));
  }
  if (zero && lo < 0 && hi > 0) add("line", { x1: L, x2: W - R, y1: py(0), y2: py(0), stroke: "#99a" });
  add("text", { x: px(x0), y: H - 6, "font-size": 10, fill: "#667" }, x0);
  add("text", { x: px(x1), y: H - 6, "font-size": 10, fill: "#667", "text-anchor": "end" }, `iteration ${x1}`);
  for (const s of series) {
    const points = x.map((xi, i) => [xi, s.values[i]]).filter(([, v]) => v !== null);
    if (s.lo && s.hi && s.lo !== s.values) {
      const band = x.map((xi, i) => [xi, s.lo[i], s.hi[i]]).filter(([, a, b]) => a !== null && b !== null);
      if (band.length > 1) {
        const d = band.map(([xi, , b]) => `${px(xi)},${py(b)}`).concat(band.reverse().map(([xi, a]) => `${px(xi)},${py(a)}`));
        add("polygon", { points: d.join(" "), fill: s.color, opacity: 0.12 });
      }
    }
    add("polyline", { points: points.map(([xi, v]) => `${px(xi)},${py(v)}`).join(" "), fill: "none", stroke: s.color, "stroke-width": 2 });
    for (const [xi, v] of points) add("circle", { cx: px(xi), cy: py(v), r: 2.5, fill: s.color });
  }
  box.append(svg, el("div", { class: "legend" }, series.map((s) => el("span", { style: `color:${s.color}` }, `● ${s.label}`))));
  return box;
}

// -- start -----------------------------------------------------------------------------------------
async function start() {
  config = await api("GET", "/api/config");
  fillSetup();
  $("hints-toggle").addEventListener("change", () => game && renderTable(game, game.moves.length));
  window.addEventListener("hashchange", showTab);
  showTab();
  document.body.dataset.state = "setup";
}

start().catch((error) => {
  document.body.dataset.state = "error";
  document.body.prepend(el("p", { class: "error" }, `The page could not start: ${error.message}`));
});
