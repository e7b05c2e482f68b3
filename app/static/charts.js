// Loss and accuracy curves on a job card's canvas; loss is scaled to its own maximum, accuracy to 0..1.

export function drawCurves(canvas, history) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 8;
  ctx.clearRect(0, 0, w, h);
  const points = (history || []).filter((pt) => pt.loss !== null);
  if (points.length < 2) return;
  const maxStep = points[points.length - 1].step, minStep = points[0].step;
  const maxLoss = Math.max(...points.map((pt) => pt.loss));
  const x = (step) => pad + (w - 2 * pad) * (step - minStep) / Math.max(1, maxStep - minStep);
  const line = (values, colour) => {
    ctx.strokeStyle = colour; ctx.lineWidth = 2; ctx.beginPath();
    values.forEach(([step, y], i) => (i ? ctx.lineTo(x(step), y) : ctx.moveTo(x(step), y)));
    ctx.stroke();
  };
  line(points.map((pt) => [pt.step, h - pad - (h - 2 * pad) * (pt.loss / (maxLoss || 1))]), "#c0362c");
  const acc = points.filter((pt) => pt.accuracy !== null && pt.accuracy !== undefined);
  if (acc.length) line(acc.map((pt) => [pt.step, h - pad - (h - 2 * pad) * pt.accuracy]), "#1a7f4b");
  ctx.font = "13px system-ui";
  ctx.fillStyle = "#c0362c"; ctx.fillText("loss", w - 110, h / 2);
  ctx.fillStyle = "#1a7f4b"; ctx.fillText("accuracy", w - 75, h / 2);
}
