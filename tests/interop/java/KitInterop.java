import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.PrintStream;
import java.math.BigDecimal;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.time.LocalDate;
import java.time.LocalTime;
import java.time.OffsetDateTime;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.apache.avro.Conversions;
import org.apache.avro.LogicalType;
import org.apache.avro.LogicalTypes;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.data.TimeConversions;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericFixed;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.avro.message.MissingSchemaException;
import org.apache.avro.message.SchemaStore;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * An outside Java service of a Kafka shop reading and writing kit's events with nothing but
 * kafka-clients and Apache Avro. Run in single-file source mode (no compile step):
 *
 * <pre>
 * java -cp 'LIBS/*' KitInterop.java MODE --bootstrap HOST:PORT --topic T [options]
 *   consume-single   --count N [--schema-topic _kit_schemas]
 *       Avro single-object values, writer schemas read from kit's schema topic into a
 *       SchemaStore.Cache, decoded by BinaryMessageDecoder.
 *   produce-single   --schema FILE --input FILE [--schema-topic _kit_schemas]
 *       Encodes each input line {"key": K, "value": V} with BinaryMessageEncoder and FILE's
 *       schema, after writing that schema to the schema topic as kit does (key: hex of the
 *       8 fingerprint bytes of the header, value: the schema's JSON).
 *   consume-registry --count N --registry URL
 *       Confluent wire format: byte 0 is 0, then a 4-byte big-endian schema id; the writer
 *       schema is fetched from URL/schemas/ids/ID, the body read by GenericDatumReader.
 * common: --timeout SECONDS (default 60): the deadline of the whole run.
 * </pre>
 *
 * Every record read or written is one JSON line on stdout. Values are plain JSON in the
 * conventions of kit.jsonavro: unions unwrapped, bytes and fixed as base64, timestamps as
 * ISO-8601 instants, dates as ISO dates, decimals and UUIDs as strings. A record that cannot
 * be decoded is a line with "error" (the run goes on); too few records by the deadline, or
 * any other failure, exits non-zero with the reason on stderr.
 */
public class KitInterop {
    static final ObjectMapper JSON = new ObjectMapper();
    static final JsonNodeFactory NODES = JsonNodeFactory.instance;
    static final PrintStream OUT =
            new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);
    static final GenericData MODEL = model();

    interface Handler {
        void accept(ConsumerRecord<byte[], byte[]> record) throws Exception;
    }

    public static void main(String[] argv) throws Exception {
        if (argv.length == 0) {
            fail("usage: KitInterop consume-single|produce-single|consume-registry --bootstrap B --topic T ...");
        }
        Map<String, String> opts = options(Arrays.copyOfRange(argv, 1, argv.length));
        long deadline = System.nanoTime()
                + TimeUnit.SECONDS.toNanos(Long.parseLong(opts.getOrDefault("timeout", "60")));
        switch (argv[0]) {
            case "consume-single" -> consumeSingle(opts, deadline);
            case "produce-single" -> produceSingle(opts, deadline);
            case "consume-registry" -> consumeRegistry(opts, deadline);
            default -> fail("unknown mode " + argv[0]);
        }
    }

    // --- modes ---------------------------------------------------------------------------

    static void consumeSingle(Map<String, String> opts, long deadline) throws Exception {
        SchemaStore.Cache cache = new SchemaStore.Cache();
        TopicPartition schemas = new TopicPartition(opts.getOrDefault("schema-topic", "_kit_schemas"), 0);
        try (KafkaConsumer<byte[], byte[]> schemaReader = consumer(need(opts, "bootstrap"));
                KafkaConsumer<byte[], byte[]> reader = consumer(need(opts, "bootstrap"))) {
            schemaReader.assign(List.of(schemas));
            schemaReader.seekToBeginning(List.of(schemas));
            readSchemas(schemaReader, schemas, cache, deadline);
            BinaryMessageDecoder<GenericRecord> decoder = new BinaryMessageDecoder<>(MODEL, null, cache);
            read(reader, need(opts, "topic"), count(opts), deadline, record -> {
                GenericRecord value;
                try {
                    value = decoder.decode(record.value());
                } catch (MissingSchemaException missing) { // written after our first read?
                    readSchemas(schemaReader, schemas, cache, deadline);
                    value = decoder.decode(record.value());
                }
                ObjectNode line = where(record);
                line.put("fingerprint", hex(Arrays.copyOfRange(record.value(), 2, 10)));
                line.put("schema", value.getSchema().getFullName());
                line.set("value", toJson(value, value.getSchema()));
                emit(line);
            });
        }
    }

    static void produceSingle(Map<String, String> opts, long deadline) throws Exception {
        String bootstrap = need(opts, "bootstrap");
        String schemaTopic = opts.getOrDefault("schema-topic", "_kit_schemas");
        Schema schema = new Schema.Parser().parse(Path.of(need(opts, "schema")).toFile());
        byte[] fingerprint = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN)
                .putLong(SchemaNormalization.parsingFingerprint64(schema)).array();
        BinaryMessageEncoder<GenericRecord> encoder = new BinaryMessageEncoder<>(MODEL, schema);
        List<String> lines = Files.readAllLines(Path.of(need(opts, "input")), StandardCharsets.UTF_8);
        ensureCompacted(bootstrap, schemaTopic, deadline);
        try (KafkaProducer<byte[], byte[]> producer = producer(bootstrap)) {
            // The schema first, confirmed before any record written with it (as kit does).
            producer.send(new ProducerRecord<>(schemaTopic, hex(fingerprint).getBytes(StandardCharsets.UTF_8),
                    schema.toString().getBytes(StandardCharsets.UTF_8))).get(remaining(deadline), TimeUnit.MILLISECONDS);
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (String text : lines) {
                if (text.isBlank()) {
                    continue;
                }
                JsonNode row = JSON.readTree(text);
                byte[] value = encoder.encode((GenericRecord) fromJson(row.get("value"), schema)).array();
                if (!Arrays.equals(Arrays.copyOfRange(value, 2, 10), fingerprint)) {
                    fail("the encoder's header does not hold the fingerprint written to " + schemaTopic);
                }
                JsonNode key = row.get("key");
                byte[] keyBytes = key == null || key.isNull() ? null : key.asText().getBytes(StandardCharsets.UTF_8);
                sent.add(producer.send(new ProducerRecord<>(need(opts, "topic"), keyBytes, value)));
            }
            producer.flush();
            for (Future<RecordMetadata> future : sent) {
                RecordMetadata meta = future.get(remaining(deadline), TimeUnit.MILLISECONDS);
                ObjectNode line = NODES.objectNode();
                line.put("partition", meta.partition());
                line.put("offset", meta.offset());
                line.put("fingerprint", hex(fingerprint));
                emit(line);
            }
        }
    }

    static void consumeRegistry(Map<String, String> opts, long deadline) throws Exception {
        String url = need(opts, "registry").replaceAll("/+$", "");
        HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
        Map<Integer, Schema> byId = new HashMap<>();
        try (KafkaConsumer<byte[], byte[]> reader = consumer(need(opts, "bootstrap"))) {
            read(reader, need(opts, "topic"), count(opts), deadline, record -> {
                byte[] value = record.value();
                if (value == null || value.length < 5 || value[0] != 0) {
                    throw new IllegalArgumentException("not in the registry wire format (magic byte 0)");
                }
                int id = ByteBuffer.wrap(value, 1, 4).getInt(); // big-endian
                Schema writer = byId.get(id);
                if (writer == null) {
                    writer = fetchSchema(http, url + "/schemas/ids/" + id);
                    byId.put(id, writer);
                }
                GenericDatumReader<GenericRecord> datumReader = new GenericDatumReader<>(writer, writer, MODEL);
                BinaryDecoder body = DecoderFactory.get().binaryDecoder(value, 5, value.length - 5, null);
                GenericRecord decoded = datumReader.read(null, body);
                if (!body.isEnd()) {
                    throw new IllegalArgumentException("bytes left over after the record");
                }
                ObjectNode line = where(record);
                line.put("schema_id", id);
                line.put("schema", writer.getFullName());
                line.set("value", toJson(decoded, writer));
                emit(line);
            });
        }
    }

    static Schema fetchSchema(HttpClient http, String url) throws Exception {
        HttpRequest request = HttpRequest.newBuilder(URI.create(url)).timeout(Duration.ofSeconds(10)).GET().build();
        HttpResponse<String> response = http.send(request, HttpResponse.BodyHandlers.ofString());
        if (response.statusCode() != 200) {
            throw new IllegalStateException("GET " + url + ": HTTP " + response.statusCode() + " " + response.body());
        }
        return new Schema.Parser().parse(JSON.readTree(response.body()).get("schema").asText());
    }

    // --- Kafka -----------------------------------------------------------------------------

    static KafkaConsumer<byte[], byte[]> consumer(String bootstrap) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("enable.auto.commit", "false");
        p.put("auto.offset.reset", "earliest");
        p.put("client.id", "kit-interop-java");
        return new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer());
    }

    static KafkaProducer<byte[], byte[]> producer(String bootstrap) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("acks", "all");
        p.put("client.id", "kit-interop-java");
        return new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer());
    }

    /** Create the schema topic as kit does (compacted, one partition) unless it exists. */
    static void ensureCompacted(String bootstrap, String topic, long deadline) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        try (Admin admin = Admin.create(p)) {
            NewTopic spec = new NewTopic(topic, Optional.of(1), Optional.empty())
                    .configs(Map.of("cleanup.policy", "compact"));
            admin.createTopics(List.of(spec)).all().get(remaining(deadline), TimeUnit.MILLISECONDS);
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof TopicExistsException)) {
                throw e;
            }
        }
    }

    /** Read the schema topic from where the reader is to its current end into the cache. */
    static void readSchemas(KafkaConsumer<byte[], byte[]> reader, TopicPartition tp, SchemaStore.Cache cache,
            long deadline) {
        long end = reader.endOffsets(List.of(tp), Duration.ofMillis(remaining(deadline))).get(tp);
        while (reader.position(tp, Duration.ofMillis(remaining(deadline))) < end) {
            for (ConsumerRecord<byte[], byte[]> record : reader.poll(Duration.ofMillis(200))) {
                if (record.value() != null) {
                    try {
                        cache.addSchema(new Schema.Parser().parse(new String(record.value(), StandardCharsets.UTF_8)));
                    } catch (RuntimeException e) {
                        System.err.println("skipping schema at offset " + record.offset() + ": " + e);
                    }
                }
            }
        }
    }

    /** Read `count` records of every partition of `topic` from the beginning. */
    static void read(KafkaConsumer<byte[], byte[]> reader, String topic, int count, long deadline, Handler handler)
            throws Exception {
        List<TopicPartition> parts = new ArrayList<>();
        while (parts.isEmpty()) {
            for (PartitionInfo info : reader.partitionsFor(topic, Duration.ofMillis(remaining(deadline)))) {
                parts.add(new TopicPartition(topic, info.partition()));
            }
        }
        reader.assign(parts);
        reader.seekToBeginning(parts);
        int seen = 0;
        while (seen < count) {
            if (remaining(deadline) <= 1) {
                fail("read " + seen + " of " + count + " records from " + topic + " before the deadline");
            }
            for (ConsumerRecord<byte[], byte[]> record : reader.poll(Duration.ofMillis(200))) {
                seen++;
                try {
                    handler.accept(record);
                } catch (Exception e) {
                    ObjectNode line = where(record);
                    line.put("error", e.toString());
                    emit(line);
                }
            }
        }
    }

    static long remaining(long deadline) {
        long left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
        if (left <= 0) {
            fail("deadline passed");
        }
        return left;
    }

    // --- Avro data <-> plain JSON ------------------------------------------------------------

    static GenericData model() {
        GenericData model = new GenericData();
        model.addLogicalTypeConversion(new TimeConversions.TimestampMillisConversion());
        model.addLogicalTypeConversion(new TimeConversions.TimestampMicrosConversion());
        model.addLogicalTypeConversion(new TimeConversions.DateConversion());
        model.addLogicalTypeConversion(new TimeConversions.TimeMillisConversion());
        model.addLogicalTypeConversion(new TimeConversions.TimeMicrosConversion());
        model.addLogicalTypeConversion(new Conversions.DecimalConversion());
        model.addLogicalTypeConversion(new Conversions.UUIDConversion());
        return model;
    }

    static String logical(Schema schema) {
        LogicalType type = schema.getLogicalType();
        return type == null ? "" : type.getName();
    }

    static JsonNode toJson(Object value, Schema schema) {
        if (value == null) {
            return NODES.nullNode();
        }
        switch (schema.getType()) {
            case UNION:
                return toJson(value, schema.getTypes().get(MODEL.resolveUnion(schema, value)));
            case RECORD: {
                ObjectNode out = NODES.objectNode();
                GenericRecord record = (GenericRecord) value;
                for (Schema.Field field : schema.getFields()) {
                    out.set(field.name(), toJson(record.get(field.pos()), field.schema()));
                }
                return out;
            }
            case ARRAY: {
                ArrayNode out = NODES.arrayNode();
                for (Object item : (List<?>) value) {
                    out.add(toJson(item, schema.getElementType()));
                }
                return out;
            }
            case MAP: {
                ObjectNode out = NODES.objectNode();
                for (Map.Entry<?, ?> entry : ((Map<?, ?>) value).entrySet()) {
                    out.set(entry.getKey().toString(), toJson(entry.getValue(), schema.getValueType()));
                }
                return out;
            }
            case FIXED:
                return NODES.textNode(Base64.getEncoder().encodeToString(((GenericFixed) value).bytes()));
            case BYTES:
                if (value instanceof BigDecimal decimal) {
                    return NODES.textNode(decimal.toPlainString());
                }
                ByteBuffer buffer = ((ByteBuffer) value).duplicate();
                byte[] bytes = new byte[buffer.remaining()];
                buffer.get(bytes);
                return NODES.textNode(Base64.getEncoder().encodeToString(bytes));
            case INT:
            case LONG:
                if (value instanceof Instant || value instanceof LocalDate || value instanceof LocalTime) {
                    return NODES.textNode(value.toString());
                }
                return NODES.numberNode(((Number) value).longValue());
            case FLOAT:
                return NODES.numberNode((Float) value);
            case DOUBLE:
                return NODES.numberNode((Double) value);
            case BOOLEAN:
                return NODES.booleanNode((Boolean) value);
            default: // STRING (a UUID too), ENUM
                return NODES.textNode(value.toString());
        }
    }

    static Object fromJson(JsonNode node, Schema schema) {
        String logical = logical(schema);
        switch (schema.getType()) {
            case NULL:
                if (!node.isNull()) {
                    throw new IllegalArgumentException("not null: " + node);
                }
                return null;
            case UNION:
                if (node.isNull()) {
                    return null;
                }
                for (Schema branch : schema.getTypes()) {
                    if (branch.getType() != Schema.Type.NULL) {
                        try {
                            return fromJson(node, branch);
                        } catch (RuntimeException e) {
                            // try the next branch
                        }
                    }
                }
                throw new IllegalArgumentException("no branch of " + schema + " fits " + node);
            case RECORD: {
                GenericData.Record record = new GenericData.Record(schema);
                for (Schema.Field field : schema.getFields()) {
                    JsonNode child = node.get(field.name());
                    record.put(field.pos(), child == null
                            ? MODEL.deepCopy(field.schema(), MODEL.getDefaultValue(field))
                            : fromJson(child, field.schema()));
                }
                return record;
            }
            case ARRAY: {
                List<Object> out = new ArrayList<>();
                node.forEach(item -> out.add(fromJson(item, schema.getElementType())));
                return out;
            }
            case MAP: {
                Map<String, Object> out = new LinkedHashMap<>();
                for (Map.Entry<String, JsonNode> e : node.properties()) {
                    out.put(e.getKey(), fromJson(e.getValue(), schema.getValueType()));
                }
                return out;
            }
            case ENUM:
                if (!schema.hasEnumSymbol(node.asText())) {
                    throw new IllegalArgumentException(node + " is not a symbol of " + schema.getFullName());
                }
                return new GenericData.EnumSymbol(schema, node.asText());
            case FIXED:
                return new GenericData.Fixed(schema, Base64.getDecoder().decode(node.asText()));
            case BYTES:
                if (logical.equals("decimal")) {
                    int scale = ((LogicalTypes.Decimal) schema.getLogicalType()).getScale();
                    return new BigDecimal(node.asText()).setScale(scale);
                }
                return ByteBuffer.wrap(Base64.getDecoder().decode(node.asText()));
            case STRING:
                return logical.equals("uuid") ? UUID.fromString(node.asText()) : text(node);
            case INT:
                return switch (logical) {
                    case "date" -> LocalDate.parse(node.asText());
                    case "time-millis" -> LocalTime.parse(node.asText());
                    default -> node.intValue();
                };
            case LONG:
                return switch (logical) {
                    case "timestamp-millis", "timestamp-micros" -> OffsetDateTime.parse(node.asText()).toInstant();
                    case "time-micros" -> LocalTime.parse(node.asText());
                    default -> node.longValue();
                };
            case FLOAT:
                return (float) node.doubleValue();
            case DOUBLE:
                return node.doubleValue();
            case BOOLEAN:
                return node.booleanValue();
            default:
                throw new IllegalArgumentException("unsupported type " + schema);
        }
    }

    // --- small things ------------------------------------------------------------------------

    static String text(JsonNode node) {
        if (!node.isTextual()) {
            throw new IllegalArgumentException("not a string: " + node);
        }
        return node.textValue();
    }

    static ObjectNode where(ConsumerRecord<byte[], byte[]> record) {
        ObjectNode line = NODES.objectNode();
        line.put("partition", record.partition());
        line.put("offset", record.offset());
        line.put("key", record.key() == null ? null : new String(record.key(), StandardCharsets.UTF_8));
        return line;
    }

    static void emit(JsonNode line) throws Exception {
        OUT.println(JSON.writeValueAsString(line));
    }

    static String hex(byte[] bytes) {
        StringBuilder out = new StringBuilder();
        for (byte b : bytes) {
            out.append(String.format("%02x", b));
        }
        return out.toString();
    }

    static int count(Map<String, String> opts) {
        return Integer.parseInt(need(opts, "count"));
    }

    static String need(Map<String, String> opts, String name) {
        String value = opts.get(name);
        if (value == null) {
            fail("missing --" + name);
        }
        return value;
    }

    static Map<String, String> options(String[] args) {
        Map<String, String> out = new HashMap<>();
        for (int i = 0; i < args.length; i += 2) {
            if (!args[i].startsWith("--") || i + 1 >= args.length) {
                fail("bad option " + args[i]);
            }
            out.put(args[i].substring(2), args[i + 1]);
        }
        return out;
    }

    static void fail(String message) {
        System.err.println("KitInterop: " + message);
        System.exit(2);
    }
}
