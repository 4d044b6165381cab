package io.tally.udf;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF2;

/**
 * The event contract as a Spark UDF: (record value bytes, receiving clock in epoch ms) to a row of
 * (error, json, one column per contract field). Every rule, limit and reason comes from the spec
 * that {@code schemas/event_jvm.py} derives from {@code schemas.event.FIELDS}; this class only
 * applies them, in the Python validator's order, and the parity tests hold both equal.
 *
 * <p>The record is decoded as strict UTF-8, then read once by Jackson's streaming parser: the
 * JSON limits (nesting, number and key lengths, finite numbers, no duplicate key, no lone
 * surrogate, nothing after the value) are checked on every token, and the root object's contract
 * fields are taken on the way.
 */
public final class EventValidator implements UDF2<byte[], Long, Row> {
    private static final long serialVersionUID = 1L;

    private static final JsonFactory JSON = JsonFactory.builder()
            .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            // Our own limits are far below these; only the string length is raised, which the
            // Python validator does not bound (a record is bounded by Kafka's message size).
            .streamReadConstraints(StreamReadConstraints.builder()
                    .maxStringLength(Integer.MAX_VALUE).maxNestingDepth(1000)
                    .maxNumberLength(1000).build())
            .build();

    private static final int STRING = 1, INT64 = 2, OTHER = 3;

    private final String specJson;
    private transient Spec spec;

    public EventValidator(String specJson) {
        this.specJson = specJson;
        this.spec = new Spec(specJson);
    }

    /** The row's column names, in order. */
    public String[] columns() {
        return spec().columns();
    }

    private Spec spec() {
        if (spec == null) {
            spec = new Spec(specJson);
        }
        return spec;
    }

    @Override
    public Row call(byte[] value, Long clockMs) {
        Spec s = spec();
        Object[] out = new Object[2 + s.fields.length];
        String text = value == null ? null : decode(value);
        if (text == null) {
            out[0] = s.reasonUtf8;
            return RowFactory.create(out);
        }
        out[1] = text;
        int[] kinds = new int[s.fields.length];
        Object[] values = new Object[s.fields.length];
        int root = scan(s, text, kinds, values);
        if (root < 0) {
            out[0] = s.reasonJson;
        } else if (root != 1) {
            out[0] = s.reasonObject;
        } else {
            String error = fields(s, kinds, values, clockMs == null ? 0L : clockMs, out);
            if (error != null) {
                java.util.Arrays.fill(out, 2, out.length, null);
                out[0] = error;
            }
        }
        return RowFactory.create(out);
    }

    private static String decode(byte[] value) {
        CharsetDecoder decoder = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT);
        try {
            CharBuffer chars = decoder.decode(ByteBuffer.wrap(value));
            return chars.toString();
        } catch (CharacterCodingException e) {
            return null;
        }
    }

    /**
     * Reads the whole text: -1 when it is not one JSON value within the limits, else 1 when
     * that value is an object (its contract fields in kinds/values), 0 when it is not.
     */
    private static int scan(Spec s, String text, int[] kinds, Object[] values) {
        if (!text.isEmpty() && text.charAt(0) == '\uFEFF') {
            return -1; // a byte order mark is no JSON whitespace
        }
        try (JsonParser p = JSON.createParser(text)) {
            JsonToken t = p.nextToken();
            if (t == null) {
                return -1;
            }
            int root = t == JsonToken.START_OBJECT ? 1 : 0;
            int depth = 0;
            int slot = -1; // the contract field whose value comes next
            while (true) {
                int taken = slot;
                slot = -1;
                switch (t) {
                    case START_OBJECT:
                    case START_ARRAY:
                        if (++depth > s.maxDepth) {
                            return -1;
                        }
                        if (taken >= 0) {
                            kinds[taken] = OTHER;
                        }
                        break;
                    case END_OBJECT:
                    case END_ARRAY:
                        depth--;
                        break;
                    case FIELD_NAME: {
                        String name = p.currentName();
                        if (name.codePointCount(0, name.length()) > s.maxKeyChars || loneSurrogate(name)) {
                            return -1;
                        }
                        if (depth == 1 && root == 1) {
                            Integer i = s.slots.get(name);
                            slot = i == null ? -1 : i;
                        }
                        break;
                    }
                    case VALUE_STRING: {
                        String v = p.getText();
                        if (loneSurrogate(v)) {
                            return -1;
                        }
                        if (taken >= 0) {
                            kinds[taken] = STRING;
                            values[taken] = v;
                        }
                        break;
                    }
                    case VALUE_NUMBER_INT: {
                        if (p.getTextLength() > s.maxNumberChars) {
                            return -1;
                        }
                        if (taken >= 0) {
                            JsonParser.NumberType type = p.getNumberType();
                            if (type == JsonParser.NumberType.INT || type == JsonParser.NumberType.LONG) {
                                kinds[taken] = INT64;
                                values[taken] = p.getLongValue();
                            } else {
                                kinds[taken] = OTHER;
                            }
                        }
                        break;
                    }
                    case VALUE_NUMBER_FLOAT:
                        if (p.getTextLength() > s.maxNumberChars
                                || Double.isInfinite(Double.parseDouble(p.getText()))) {
                            return -1;
                        }
                        if (taken >= 0) {
                            kinds[taken] = OTHER;
                        }
                        break;
                    case VALUE_TRUE:
                    case VALUE_FALSE:
                        if (taken >= 0) {
                            kinds[taken] = OTHER;
                        }
                        break;
                    case VALUE_NULL:
                        break; // a null field is an absent one
                    default:
                        return -1;
                }
                if (depth == 0) {
                    return p.nextToken() == null ? root : -1; // nothing after the value
                }
                t = p.nextToken();
                if (t == null) {
                    return -1;
                }
            }
        } catch (IOException | RuntimeException e) {
            return -1; // a syntax error, or one of Jackson's own (higher) limits
        }
    }

    private static boolean loneSurrogate(String v) {
        for (int i = 0, n = v.length(); i < n; i++) {
            char c = v.charAt(i);
            if (Character.isHighSurrogate(c)) {
                if (i + 1 < n && Character.isLowSurrogate(v.charAt(i + 1))) {
                    i++;
                } else {
                    return true;
                }
            } else if (Character.isLowSurrogate(c)) {
                return true;
            }
        }
        return false;
    }

    /** The contract's rules on the root object's fields: the first broken one's reason, or null. */
    private static String fields(Spec s, int[] kinds, Object[] values, long clockMs, Object[] out) {
        for (int i = 0; i < s.fields.length; i++) {
            FieldRule f = s.fields[i];
            int kind = kinds[i];
            if (kind == 0) {
                if (f.required) {
                    return f.reasonRequired;
                }
                out[2 + i] = f.defaultValue;
                continue;
            }
            switch (f.kind) {
                case "string": {
                    if (kind != STRING) {
                        return f.reasonType;
                    }
                    String v = (String) values[i];
                    if (f.pattern != null) {
                        if (!f.pattern.matcher(v).matches()) {
                            return f.reasonPattern;
                        }
                    } else {
                        if (v.codePointCount(0, v.length()) > f.maxLen) {
                            return f.reasonMaxLen;
                        }
                        if (f.enumValues != null && !f.enumValues.contains(v)) {
                            return f.reasonEnum;
                        }
                    }
                    out[2 + i] = v;
                    break;
                }
                case "integer": {
                    if (kind != INT64) {
                        return f.reasonType;
                    }
                    long v = (Long) values[i];
                    if (v < f.minimum || v > f.maximum) {
                        return f.reasonRange;
                    }
                    out[2 + i] = v;
                    break;
                }
                default: { // timestamp
                    Long ms = null;
                    if (kind == INT64) {
                        ms = (Long) values[i];
                    } else if (kind == STRING) {
                        ms = rfc3339Ms(s.rfc3339, (String) values[i]);
                    }
                    if (ms == null) {
                        return f.reasonType;
                    }
                    if (ms < s.minTsMs) {
                        return f.reasonTsBefore;
                    }
                    if (ms - clockMs > s.maxFutureMs) {
                        return f.reasonTsFuture;
                    }
                    out[2 + i] = ms;
                }
            }
        }
        return null;
    }

    /** schemas.event.parse_rfc3339_ms: the same regex, positions and arithmetic. */
    static Long rfc3339Ms(Pattern rfc3339, String text) {
        Matcher m = rfc3339.matcher(text);
        if (!m.matches()) {
            return null;
        }
        int y = Integer.parseInt(text.substring(0, 4));
        int mo = Integer.parseInt(text.substring(5, 7));
        int d = Integer.parseInt(text.substring(8, 10));
        if (mo < 1 || mo > 12 || d < 1 || d > daysInMonth(y, mo)) {
            return null;
        }
        int hh = Integer.parseInt(text.substring(11, 13));
        int mi = Integer.parseInt(text.substring(14, 16));
        int ss = Integer.parseInt(text.substring(17, 19));
        if (hh > 23 || mi > 59 || ss > 59) {
            return null;
        }
        String frac = m.group(7), zone = m.group(8);
        long offsetMin = 0;
        if (!zone.equals("Z") && !zone.equals("z")) {
            int oh = Integer.parseInt(m.group(10)), om = Integer.parseInt(m.group(11));
            if (oh > 23 || om > 59) {
                return null;
            }
            offsetMin = (oh * 60L + om) * (m.group(9).equals("+") ? 1 : -1);
        }
        long millis = frac == null ? 0 : Long.parseLong((frac + "00").substring(0, 3));
        long days = daysFromCivil(y, mo, d);
        return (days * 86400 + hh * 3600L + mi * 60L + ss) * 1000 + millis - offsetMin * 60_000;
    }

    static long daysFromCivil(long y, long m, long d) {
        y -= m <= 2 ? 1 : 0;
        long era = Math.floorDiv(y, 400);
        long yoe = y - era * 400;
        long mp = m + (m > 2 ? -3 : 9);
        long doy = Math.floorDiv(153 * mp + 2, 5) + d - 1;
        long doe = yoe * 365 + Math.floorDiv(yoe, 4) - Math.floorDiv(yoe, 100) + doy;
        return era * 146097 + doe - 719468;
    }

    static int daysInMonth(int y, int m) {
        if (m == 2) {
            boolean leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
            return leap ? 29 : 28;
        }
        return m == 4 || m == 6 || m == 9 || m == 11 ? 30 : 31;
    }

    /** One field's rule and reasons, from the spec. */
    static final class FieldRule {
        String name, kind, reasonRequired, reasonType, reasonPattern, reasonMaxLen, reasonEnum,
                reasonRange, reasonTsBefore, reasonTsFuture;
        boolean required;
        Pattern pattern;
        int maxLen;
        long minimum, maximum;
        Set<String> enumValues;
        Object defaultValue;
    }

    /** The spec, parsed once per instance (and again after deserialisation on an executor). */
    static final class Spec {
        final FieldRule[] fields;
        final Map<String, Integer> slots = new HashMap<>();
        final String reasonUtf8, reasonJson, reasonObject;
        final int maxDepth, maxNumberChars, maxKeyChars;
        final long minTsMs, maxFutureMs;
        final Pattern rfc3339;

        Spec(String json) {
            JsonNode root;
            try {
                root = new ObjectMapper().readTree(json);
            } catch (IOException e) {
                throw new IllegalArgumentException("not a validator spec: " + e.getMessage(), e);
            }
            reasonUtf8 = root.get("reason_utf8").asText();
            reasonJson = root.get("reason_json").asText();
            reasonObject = root.get("reason_object").asText();
            maxDepth = root.get("max_depth").asInt();
            maxNumberChars = root.get("max_number_chars").asInt();
            maxKeyChars = root.get("max_key_chars").asInt();
            minTsMs = root.get("min_ts_ms").asLong();
            maxFutureMs = root.get("max_future_ms").asLong();
            rfc3339 = Pattern.compile(root.get("rfc3339").asText());
            Set<String> types = new HashSet<>();
            root.get("event_types").forEach(n -> types.add(n.asText()));
            List<FieldRule> rules = new ArrayList<>();
            for (JsonNode n : root.get("fields")) {
                FieldRule f = new FieldRule();
                f.name = n.get("name").asText();
                f.kind = n.get("kind").asText();
                f.required = n.get("required").asBoolean();
                f.pattern = n.get("pattern").isNull() ? null : Pattern.compile(n.get("pattern").asText());
                f.maxLen = n.get("max_len").asInt();
                f.minimum = n.get("minimum").isNull() ? Long.MIN_VALUE : n.get("minimum").asLong();
                f.maximum = n.get("maximum").isNull() ? Long.MAX_VALUE : n.get("maximum").asLong();
                f.enumValues = n.get("enum").asBoolean() ? types : null;
                JsonNode def = n.get("default");
                f.defaultValue = def.isNull() ? null : (def.isIntegralNumber() ? (Object) def.asLong() : def.asText());
                JsonNode r = n.get("reasons");
                f.reasonRequired = r.path("required").asText(null);
                f.reasonType = r.path("type").asText(null);
                f.reasonPattern = r.path("pattern").asText(null);
                f.reasonMaxLen = r.path("max_len").asText(null);
                f.reasonEnum = r.path("enum").asText(null);
                f.reasonRange = r.path("range").asText(null);
                f.reasonTsBefore = r.path("ts_before").asText(null);
                f.reasonTsFuture = r.path("ts_future").asText(null);
                slots.put(f.name, rules.size());
                rules.add(f);
            }
            fields = rules.toArray(new FieldRule[0]);
        }

        String[] columns() {
            String[] out = new String[2 + fields.length];
            out[0] = "error";
            out[1] = "json";
            for (int i = 0; i < fields.length; i++) {
                out[2 + i] = fields[i].name;
            }
            return out;
        }
    }
}
