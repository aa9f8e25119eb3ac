// Progress on stderr: a redrawn bar on a TTY, plain lines (every 10%) otherwise.

export class ProgressBar {
  private lastPct = -1;
  private readonly tty: boolean;

  constructor(private readonly label: string, private readonly out: NodeJS.WriteStream = process.stderr) {
    this.tty = out.isTTY === true;
  }

  update(done: number, total: number): void {
    const pct = total > 0 ? Math.floor((100 * done) / total) : 100;
    if (this.tty) {
      const width = 30;
      const fill = Math.round((width * pct) / 100);
      this.out.write(`\r${this.label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${String(pct).padStart(3)}% (${done}/${total})`);
      if (done >= total) this.out.write('\n');
    } else if (Math.floor(pct / 10) > Math.floor(this.lastPct / 10) || (done >= total && this.lastPct < 100)) {
      this.out.write(`${this.label}: ${pct}% (${done}/${total})\n`);
    }
    this.lastPct = pct;
  }
}
