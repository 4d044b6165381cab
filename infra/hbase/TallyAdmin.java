// Creates Tally's HBase tables (and aligns their family TTLs) through the Java Admin API, because
// the Thrift v1 API that happybase speaks can neither pass split keys nor alter a family. Run as
// a single-file program on HBase's classpath:
//
//   java -cp "<conf dir>:<hbase jars>/*" infra/hbase/TallyAdmin.java [--alter-ttl] \
//        <table> <salt buckets or 1> <family>:<ttl seconds or 0> [<family>:<ttl> ...] \
//        [-- <table> <salt buckets> <family>:<ttl> ...]
//
// Several tables (separated by --) are created in one run: one JVM start and one connection
// instead of one each, which is most of the time a table takes.
// With N salt buckets the table is pre-split at the one-byte keys 0x01 .. N-1, so that every
// salt value owns exactly one region. A created table prints `created <table> regions=N`.
// An existing table prints `exists <table> regions=N` and is otherwise left alone, which keeps
// `tally stack up` idempotent; with --alter-ttl, each of its families whose TTL differs from the
// wanted one is then altered in place (Admin.modifyColumnFamily, every other setting kept):
//
//   altered <table> <family> ttl=<old seconds>-><new seconds>
//
// and a wanted family the table lacks is added with the settings a new table gets:
//
//   added <table> <family> ttl=<seconds>
//
// (TTLs in seconds as HBase stores them: 0 on the command line, "forever", is 2147483647.)
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hbase.HBaseConfiguration;
import org.apache.hadoop.hbase.HConstants;
import org.apache.hadoop.hbase.TableName;
import org.apache.hadoop.hbase.client.Admin;
import org.apache.hadoop.hbase.client.ColumnFamilyDescriptor;
import org.apache.hadoop.hbase.client.ColumnFamilyDescriptorBuilder;
import org.apache.hadoop.hbase.client.Connection;
import org.apache.hadoop.hbase.client.ConnectionFactory;
import org.apache.hadoop.hbase.client.TableDescriptor;
import org.apache.hadoop.hbase.client.TableDescriptorBuilder;
import org.apache.hadoop.hbase.io.compress.Compression;
import org.apache.hadoop.hbase.io.encoding.DataBlockEncoding;
import org.apache.hadoop.hbase.regionserver.BloomType;
import org.apache.hadoop.hbase.util.Bytes;

public class TallyAdmin {
  public static void main(String[] args) throws Exception {
    List<List<String>> specs = new ArrayList<>();
    specs.add(new ArrayList<>());
    boolean alterTtl = args.length > 0 && args[0].equals("--alter-ttl");
    if (alterTtl) {
      args = Arrays.copyOfRange(args, 1, args.length);
    }
    for (String a : args) {
      if (a.equals("--")) {
        specs.add(new ArrayList<>());
      } else {
        specs.get(specs.size() - 1).add(a);
      }
    }
    for (List<String> spec : specs) {
      if (spec.size() < 3) {
        System.err.println("usage: TallyAdmin [--alter-ttl] <table> <salt buckets> "
            + "<family>:<ttl seconds>... [-- <table> ...]");
        System.exit(2);
      }
    }
    Configuration conf = HBaseConfiguration.create();
    try (Connection conn = ConnectionFactory.createConnection(conf);
         Admin admin = conn.getAdmin()) {
      for (List<String> spec : specs) {
        create(admin, spec, alterTtl);
      }
    }
  }

  /** The TTL HBase stores for a command-line TTL (0 = forever). */
  private static int ttl(String seconds) {
    int ttl = Integer.parseInt(seconds);
    return ttl > 0 ? ttl : HConstants.FOREVER;
  }

  /** A family as a new table gets it. */
  private static ColumnFamilyDescriptor family(String name, int ttl) {
    return ColumnFamilyDescriptorBuilder.newBuilder(Bytes.toBytes(name))
        .setMaxVersions(1)
        .setTimeToLive(ttl)
        .setBloomFilterType(BloomType.ROW)
        .setDataBlockEncoding(DataBlockEncoding.FAST_DIFF)
        .setCompressionType(Compression.Algorithm.NONE)
        .build();
  }

  private static void create(Admin admin, List<String> spec, boolean alterTtl) throws Exception {
    TableName name = TableName.valueOf(spec.get(0));
    int buckets = Integer.parseInt(spec.get(1));
    if (admin.tableExists(name)) {
      System.out.println("exists " + name + " regions=" + admin.getRegions(name).size());
      if (alterTtl) {
        alter(admin, name, spec.subList(2, spec.size()));
      }
      return;
    }
    TableDescriptorBuilder table = TableDescriptorBuilder.newBuilder(name);
    for (String f : spec.subList(2, spec.size())) {
      String[] fam = f.split(":", 2);
      table.setColumnFamily(family(fam[0], ttl(fam[1])));
    }
    List<byte[]> splits = new ArrayList<>();
    for (int s = 1; s < buckets; s++) {
      splits.add(new byte[] {(byte) s});
    }
    if (splits.isEmpty()) {
      admin.createTable(table.build());
    } else {
      admin.createTable(table.build(), splits.toArray(new byte[0][]));
    }
    System.out.println("created " + name + " regions=" + admin.getRegions(name).size());
  }

  /** Brings the TTL of each wanted family of an existing table to the wanted value. */
  private static void alter(Admin admin, TableName name, List<String> families) throws Exception {
    TableDescriptor current = admin.getDescriptor(name);
    for (String f : families) {
      String[] fam = f.split(":", 2);
      int want = ttl(fam[1]);
      ColumnFamilyDescriptor have = current.getColumnFamily(Bytes.toBytes(fam[0]));
      if (have == null) {
        admin.addColumnFamily(name, family(fam[0], want));
        System.out.println("added " + name + " " + fam[0] + " ttl=" + want);
      } else if (have.getTimeToLive() != want) {
        // modifyColumnFamily waits until the regions have been reopened with the new TTL.
        admin.modifyColumnFamily(name,
            ColumnFamilyDescriptorBuilder.newBuilder(have).setTimeToLive(want).build());
        System.out.println("altered " + name + " " + fam[0] + " ttl=" + have.getTimeToLive()
            + "->" + want);
      }
    }
  }
}
