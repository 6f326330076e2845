package dev.sonicflow.bench;

import java.io.IOException;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.Produced;

/**
 * The Kafka Streams baseline of {@code npm run bench}: a chain of {@code hops} identity hops
 * {@code <prefix>.h0 -> hop1 -> <prefix>.h1 -> ... -> hop<n> -> <prefix>.h<n>}, each hop its own
 * sub-topology (source, {@code mapValues(identity)}, sink) with explicit processor names, run as
 * ONE application (application.id {@code <prefix>.streams}) in one JVM with ONE stream thread
 * (num.stream.threads=1), so every task of every hop shares one consumer and one transactional
 * producer, like a single Kafka Streams instance on a small machine.
 *
 * <p>processing.guarantee=exactly_once_v2; commit.interval.ms is left at its EOS default (100 ms);
 * replication.factor=1 for the (here non-existent) internal topics; the transaction state log
 * settings are the broker's. Keys and values are raw bytes (ByteArray serdes): no deserialisation
 * cost, the value is copied unchanged. The topics must exist (the caller creates them).
 *
 * <p>Usage: {@code java -jar kafka-streams-bench.jar <bootstrap servers> <topic prefix> <hops> [state dir [client properties]]}
 *
 * <p>The optional client properties file holds the connection's security settings (for a secured
 * broker: security.protocol, sasl.mechanism, sasl.jaas.config, ssl.truststore.*); they apply to
 * every client of the application. Its contents are never printed.
 *
 * <p>stdout carries only this class's lines: the topology description and {@code STATE <new state>}
 * on every state change ({@code STATE RUNNING} once all tasks are assigned). Logs (warnings only)
 * go to stderr. SIGTERM closes the application (up to 8 s; the main consumer leaves the group,
 * so that the caller can delete it at once) and the JVM exits (143); an uncaught stream thread
 * error shuts the client down and exits 1.
 */
public final class HopChain {
  private HopChain() {}

  public static void main(String[] args) throws InterruptedException, IOException {
    if (args.length < 3) {
      System.err.println("usage: HopChain <bootstrap servers> <topic prefix> <hops> [state dir [client properties]]");
      System.exit(2);
    }
    String bootstrap = args[0];
    String prefix = args[1];
    int hops = Integer.parseInt(args[2]);
    String stateDir = args.length > 3 ? args[3] : System.getProperty("java.io.tmpdir") + "/kafka-streams-" + prefix;

    StreamsBuilder builder = new StreamsBuilder();
    for (int i = 1; i <= hops; i++) {
      String in = prefix + ".h" + (i - 1);
      String out = prefix + ".h" + i;
      builder
          .stream(in, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()).withName("hop" + i + "-source"))
          .mapValues(v -> v, Named.as("hop" + i + "-identity"))
          .to(out, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()).withName("hop" + i + "-sink"));
    }

    Properties props = new Properties();
    // the connection's security settings first: the settings below are the benchmark's own
    if (args.length > 4) {
      try (Reader in = Files.newBufferedReader(Paths.get(args[4]), StandardCharsets.UTF_8)) {
        props.load(in);
      }
    }
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, prefix + ".streams");
    props.put(StreamsConfig.CLIENT_ID_CONFIG, prefix + ".streams");
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
    props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
    props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
    props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
    // Kafka Streams keeps a closing member in its group until the session times out (45 s), which
    // would keep the caller from deleting the group; leave it on close instead (shutdown only).
    props.put(StreamsConfig.mainConsumerPrefix("internal.leave.group.on.close"), true);

    StreamsConfig config = new StreamsConfig(props);
    Topology topology = builder.build(props);
    System.out.println(topology.describe());
    System.out.println("CONFIG processing.guarantee=" + config.getString(StreamsConfig.PROCESSING_GUARANTEE_CONFIG)
        + " commit.interval.ms=" + config.getLong(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG)
        + " num.stream.threads=" + config.getInt(StreamsConfig.NUM_STREAM_THREADS_CONFIG));
    System.out.flush();

    KafkaStreams streams = new KafkaStreams(topology, props);
    CountDownLatch done = new CountDownLatch(1);
    AtomicInteger exitCode = new AtomicInteger(0);
    streams.setStateListener((now, before) -> {
      System.out.println("STATE " + now);
      System.out.flush();
      if (now == KafkaStreams.State.ERROR) {
        exitCode.set(1);
        done.countDown();
      }
      if (now == KafkaStreams.State.NOT_RUNNING) done.countDown();
    });
    streams.setUncaughtExceptionHandler(e -> {
      System.err.println("stream thread failed: " + e);
      exitCode.set(1);
      return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
    });
    KafkaStreams.CloseOptions close = new KafkaStreams.CloseOptions().timeout(Duration.ofSeconds(8));
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      streams.close(close);
      done.countDown();
    }, "hopchain-shutdown"));

    streams.start();
    done.await();
    if (exitCode.get() != 0) {
      streams.close(close);
      System.exit(exitCode.get());
    }
  }
}
