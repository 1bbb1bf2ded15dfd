// Prints the JVM's own /proc/self/maps (tools/capture/capture.sh runs it under strace).
public class Maps {
    public static void main(String[] args) throws Exception {
        byte[] maps = java.nio.file.Files.readAllBytes(java.nio.file.Path.of("/proc/self/maps"));
        System.out.write(maps);
        System.out.flush();
    }
}
