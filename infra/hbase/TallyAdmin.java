// Creates Tally's HBase tables through the Java Admin API, because the Thrift v1 API that
// happybase speaks cannot pass split keys. Run as a single-file program on HBase's classpath:
//
//   java -cp "<conf dir>:<hbase jars>/*" infra/hbase/TallyAdmin.java \
//        <table> <salt buckets or 1> <family>:<ttl seconds or 0> [<family>:<ttl> ...] \
//        [-- <table> <salt buckets> <family>:<ttl> ...]
//
// Several tables (separated by --) are created in one run: one JVM start and one connection
// instead of one each, which is most of the time a table takes.
// With N salt buckets the table is pre-split at the one-byte keys 0x01 .. N-1, so that every
// salt value owns exactly one region. An existing table is left alone (its region count and
// families are printed), which keeps `tally stack up` idempotent.
import java.util.ArrayList;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hbase.HBaseConfiguration;
import org.apache.hadoop.hbase.HConstants;
import org.apache.hadoop.hbase.TableName;
import org.apache.hadoop.hbase.client.Admin;
import org.apache.hadoop.hbase.client.ColumnFamilyDescriptorBuilder;
import org.apache.hadoop.hbase.client.Connection;
import org.apache.hadoop.hbase.client.ConnectionFactory;
import org.apache.hadoop.hbase.client.TableDescriptorBuilder;
import org.apache.hadoop.hbase.io.compress.Compression;
import org.apache.hadoop.hbase.io.encoding.DataBlockEncoding;
import org.apache.hadoop.hbase.regionserver.BloomType;
import org.apache.hadoop.hbase.util.Bytes;

public class TallyAdmin {
  public static void main(String[] args) throws Exception {
    List<List<String>> specs = new ArrayList<>();
    specs.add(new ArrayList<>());
    for (String a : args) {
      if (a.equals("--")) {
        specs.add(new ArrayList<>());
      } else {
        specs.get(specs.size() - 1).add(a);
      }
    }
    for (List<String> spec : specs) {
      if (spec.size() < 3) {
        System.err.println("usage: TallyAdmin <table> <salt buckets> <family>:<ttl seconds>... "
            + "[-- <table> ...]");
        System.exit(2);
      }
    }
    Configuration conf = HBaseConfiguration.create();
    try (Connection conn = ConnectionFactory.createConnection(conf);
         Admin admin = conn.getAdmin()) {
      for (List<String> spec : specs) {
        create(admin, spec);
      }
    }
  }

  private static void create(Admin admin, List<String> spec) throws Exception {
    TableName name = TableName.valueOf(spec.get(0));
    int buckets = Integer.parseInt(spec.get(1));
    if (admin.tableExists(name)) {
      System.out.println("exists " + name + " regions=" + admin.getRegions(name).size());
      return;
    }
    TableDescriptorBuilder table = TableDescriptorBuilder.newBuilder(name);
    for (String f : spec.subList(2, spec.size())) {
      String[] fam = f.split(":", 2);
      int ttl = Integer.parseInt(fam[1]);
      table.setColumnFamily(ColumnFamilyDescriptorBuilder.newBuilder(Bytes.toBytes(fam[0]))
          .setMaxVersions(1)
          .setTimeToLive(ttl > 0 ? ttl : HConstants.FOREVER)
          .setBloomFilterType(BloomType.ROW)
          .setDataBlockEncoding(DataBlockEncoding.FAST_DIFF)
          .setCompressionType(Compression.Algorithm.NONE)
          .build());
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
}
