/** Process entry of the `sonicflow` CLI. */
import { main } from './cli.js';

const code = await main();
// kafkajs keeps sockets and timers alive for a moment; exit once the command is done
process.exit(code);
